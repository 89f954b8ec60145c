use super::*;
use crate::attribution::test_fixtures::{lab_records, seed_section, Rng};
use std::collections::{BTreeMap, BTreeSet};

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn helper(s: &str) -> Helper {
    let a = argv(s);
    parse_helper(&a[0], &a).unwrap_or_else(|| panic!("{s:?} should be a helper"))
}

// ---- seed node (real OpenShift 4.12 worker) ---------------------------------------------------

/// One `ps -ef` line of the seed file: pid and argv (CMD is the 8th column on).
fn ps_line(line: &str) -> (u32, Vec<String>) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.len() > 8, "ps -ef line too short: {line:.80}");
    let pid = fields[1].parse().expect("ps -ef PID column");
    (pid, fields[7..].iter().map(|s| s.to_string()).collect())
}

fn seed_conmons() -> Vec<(u32, Vec<String>, Helper)> {
    seed_section("node ps -ef | grep conmon")
        .into_iter()
        .map(|line| {
            let (pid, a) = ps_line(line);
            let h = parse_helper(&a[0], &a)
                .unwrap_or_else(|| panic!("conmon pid {pid} not recognised"));
            (pid, a, h)
        })
        .collect()
}

/// What the seed file says each conmon is for (read off its `-c` and `-n` by hand).
const SEED_EXPECTED: &[(u32, &str, &str, &str)] = &[
    (
        11677,
        "1961af83ec2bf15ae89371edd5ebb534886c9db6bfaa385ac4fb53b4232df966",
        "prometheus-adapter",
        "prometheus-adapter-b87c6d546-7jlzw",
    ),
    (
        12918,
        "2b0aa6f218f552f0d1009b07a80d23d9d47c8b63c23777fb51dcb1aa648d0316",
        "prometheus",
        "prometheus-k8s-1",
    ),
    (
        12978,
        "76140a26677b1512e18864b5c1bfb31a2847d581721a64cd7f7633fb2a62ab66",
        "config-reloader",
        "prometheus-k8s-1",
    ),
    (
        13037,
        "a36c49e125c9a385e8e32e904e61c404c40135a1c5040d01244692e1a930f730",
        "thanos-sidecar",
        "prometheus-k8s-1",
    ),
    (
        13087,
        "22d9f341cb2b9f8748852a5b83146844cebb8ec2e4e00ce17016d523f5edb1ec",
        "prometheus-proxy",
        "prometheus-k8s-1",
    ),
    (
        13142,
        "bacbcddd17d2cfd032c0e890783018bec8d98a06b373918576b0de533332b369",
        "kube-rbac-proxy",
        "prometheus-k8s-1",
    ),
    (
        13194,
        "1b1d29d044d4fadd61fdc8b3e040c4aaa9a8fb2690cffb562d170d3952dbc9d6",
        "kube-rbac-proxy-thanos",
        "prometheus-k8s-1",
    ),
];

#[test]
fn seed_conmon_lines_give_container_and_pod() {
    let conmons = seed_conmons();
    assert_eq!(
        conmons.len(),
        SEED_EXPECTED.len(),
        "conmon lines in seed-node.txt"
    );
    for ((pid, a, h), (epid, ecid, econtainer, epod)) in conmons.iter().zip(SEED_EXPECTED) {
        assert_eq!(pid, epid, "order of conmon lines");
        assert_eq!(h.kind, HelperKind::Conmon, "pid {pid}");
        assert_eq!(h.container_id.as_deref(), Some(*ecid), "pid {pid} -c");
        let k8s = h
            .k8s
            .as_ref()
            .unwrap_or_else(|| panic!("pid {pid}: no k8s name"));
        assert_eq!(k8s.container, *econtainer, "pid {pid}");
        assert_eq!(k8s.pod, *epod, "pid {pid}");
        assert_eq!(k8s.namespace, "openshift-monitoring", "pid {pid}");
        assert_eq!(k8s.attempt, Some(0), "pid {pid}");
        assert!(!h.exec, "pid {pid} is not an exec session");
        assert!(
            !h.pod_level && h.sandbox_id.is_none(),
            "pid {pid}: one conmon per container"
        );
        assert!(h.runtime_command.is_none() && h.namespace.is_none());
        // "--runtime-arg --root=/run/runc" must not be read as an option of conmon's own.
        assert_eq!(
            h.runtime_path.as_deref(),
            Some("/usr/bin/runc"),
            "pid {pid} -r"
        );
        assert_eq!(
            h.name.as_deref(),
            Some(a[a.iter().position(|x| x == "-n").expect("-n") + 1].as_str())
        );

        // Independent witnesses on the same line: the bundle dir (-b) and -u carry the id,
        // and the log path (-l) carries the same pod identity as -n.
        let bundle = &a[a.iter().position(|x| x == "-b").expect("-b") + 1];
        assert!(
            bundle.contains(&format!("/overlay-containers/{ecid}/")),
            "pid {pid} -b {bundle}"
        );
        assert_eq!(a[a.iter().position(|x| x == "-u").expect("-u") + 1], *ecid);
        let log = h
            .log_path
            .as_deref()
            .unwrap_or_else(|| panic!("pid {pid}: no log path"));
        assert_eq!(
            K8sName::from_log_path(log).as_ref(),
            Some(k8s),
            "pid {pid}: -l vs -n"
        );
    }
}

#[test]
fn seed_conmons_agree_with_pod_list_and_crictl() {
    let conmons = seed_conmons();

    // oc get pods: NAMESPACE NAME READY ...; READY "6/6" = 6 containers.
    let pods: BTreeMap<(String, String), u32> = seed_section("oc get pods")
        .into_iter()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let total = f[2]
                .split('/')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .expect("READY x/y");
            ((f[0].to_owned(), f[1].to_owned()), total)
        })
        .collect();
    let mut per_pod: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (pid, _, h) in &conmons {
        let k = h.k8s.as_ref().expect("k8s name");
        let key = (k.namespace.clone(), k.pod.clone());
        assert!(
            pods.contains_key(&key),
            "pid {pid}: pod {key:?} is not in the pod list"
        );
        per_pod.entry(key).or_default().insert(k.pod_uid.clone());
    }
    // Every pod's containers share one uid; prometheus-k8s-1 has all 6 (READY 6/6) conmons here.
    for (key, uids) in &per_pod {
        assert_eq!(uids.len(), 1, "{key:?} has several pod uids: {uids:?}");
    }
    let prom = (
        "openshift-monitoring".to_owned(),
        "prometheus-k8s-1".to_owned(),
    );
    let prom_conmons = conmons
        .iter()
        .filter(|(_, _, h)| {
            h.k8s
                .as_ref()
                .is_some_and(|k| (k.namespace.clone(), k.pod.clone()) == prom)
        })
        .count();
    assert_eq!(
        Some(&(prom_conmons as u32)),
        pods.get(&prom),
        "prometheus-k8s-1 READY vs conmons"
    );
    assert_eq!(
        per_pod
            .get(&prom)
            .and_then(|u| u.iter().next())
            .map(String::as_str),
        Some("0a15cd78-757d-4322-9f35-94f7c42860b4")
    );

    // crictl ps: 13-char id, image, "42 minutes ago", state, name, attempt, pod id, pod.
    let rows = seed_section("crictl ps");
    assert_eq!(rows.len(), 6, "crictl rows for prometheus-k8s-1");
    for row in rows {
        let f: Vec<&str> = row.split_whitespace().collect();
        let (short, name) = (f[0], f[6]);
        assert_eq!(short.len(), 13, "crictl id {short}");
        let matches: Vec<_> = conmons
            .iter()
            .filter(|(_, _, h)| {
                h.container_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with(short))
            })
            .collect();
        assert_eq!(
            matches.len(),
            1,
            "crictl id {short} should prefix exactly one conmon -c"
        );
        let k = matches[0].2.k8s.as_ref().expect("k8s name");
        assert_eq!(k.container, name, "crictl {short}");
        if let Some(pod) = f.get(9) {
            assert_eq!(k.pod, *pod, "crictl {short}");
        }
    }
}

// ---- real lab captures (podman + conmon + runc, containerd + shim + runc) --------------------

#[test]
fn lab_conmons_match_podman_inspect() {
    let recs: Vec<_> = lab_records()
        .into_iter()
        .filter(|r| r.role == "conmon")
        .collect();
    assert_eq!(recs.len(), 3, "two container conmons and one exec conmon");
    for r in recs {
        for exe in [r.exe.as_str(), r.comm.as_deref().expect("comm")] {
            let h = parse_helper(exe, &r.argv).unwrap_or_else(|| panic!("pid {:?}", r.pid));
            assert_eq!(h.kind, HelperKind::Conmon);
            assert_eq!(
                h.container_id.as_deref(),
                Some(r.truth.container_id.as_str()),
                "pid {:?}",
                r.pid
            );
            assert_eq!(
                h.name, r.truth.name,
                "podman passes the container name as -n"
            );
            assert_eq!(h.k8s, None, "podman names are not CRI names");
            assert_eq!(Some(h.exec), r.truth.exec, "pid {:?} exec", r.pid);
            assert_eq!(h.runtime_path.as_deref(), Some("/tmp/attr-lab/bin/runc"));
            if h.exec {
                assert_eq!(h.log_path, None, "exec conmons get -l none");
            } else {
                let log = h.log_path.as_deref().expect("log path");
                assert!(
                    log.starts_with("/var/lib/containers/storage/overlay-containers/")
                        && log.ends_with("/userdata/ctr.log")
                        && log.contains(&r.truth.container_id),
                    "k8s-file: prefix stripped: {log}"
                );
            }
        }
    }
}

#[test]
fn lab_runc_invocations_name_their_container() {
    let recs: Vec<_> = lab_records()
        .into_iter()
        .filter(|r| r.role == "runtime")
        .collect();
    let commands: Vec<String> = recs
        .iter()
        .map(|r| {
            let h = parse_helper(&r.exe, &r.argv).unwrap_or_else(|| panic!("{:?}", r.argv));
            assert_eq!(h.kind, HelperKind::Runtime);
            assert_eq!(
                h.container_id.as_deref(),
                Some(r.truth.container_id.as_str()),
                "{:?}",
                r.argv
            );
            assert!(h.k8s.is_none() && h.namespace.is_none() && h.name.is_none());
            h.runtime_command.expect("subcommand")
        })
        .collect();
    let podman: Vec<_> = recs
        .iter()
        .zip(&commands)
        .filter(|(r, _)| r.file == "podman-runc")
        .map(|(_, c)| c.as_str())
        .collect();
    assert_eq!(
        podman,
        ["create", "start", "create", "start", "exec", "kill", "kill", "delete", "delete"]
    );
    let ctrd: Vec<_> = recs
        .iter()
        .zip(&commands)
        .filter(|(r, _)| r.file == "ctrd-runc")
        .map(|(_, c)| c.as_str())
        .collect();
    assert_eq!(
        ctrd,
        [
            "create", "start", "create", "start", "kill", "kill", "delete", "delete", "delete",
            "delete"
        ]
    );
}

#[test]
fn lab_shims_give_namespace_and_id() {
    let recs: Vec<_> = lab_records()
        .into_iter()
        .filter(|r| r.role == "shim")
        .collect();
    assert_eq!(recs.len(), 6, "2 long-lived shims, 2 launches, 2 deletes");
    let mut actions = Vec::new();
    for r in &recs {
        let mut exes = vec![r.exe.as_str()];
        exes.extend(r.comm.as_deref());
        for exe in exes {
            let h = parse_helper(exe, &r.argv).unwrap_or_else(|| panic!("{exe} {:?}", r.argv));
            assert_eq!(h.kind, HelperKind::Shim);
            assert_eq!(
                h.container_id.as_deref(),
                Some(r.truth.container_id.as_str())
            );
            if let Some(ns) = &r.truth.namespace {
                assert_eq!(h.namespace.as_deref(), Some(ns.as_str()));
            }
            assert!(h.namespace.is_some());
            if r.pid.is_some() {
                assert_eq!(h.runtime_command, None, "the long-lived shim has no action");
            }
            actions.push(h.runtime_command.clone());
        }
    }
    let launched: Vec<_> = actions.iter().flatten().map(String::as_str).collect();
    assert_eq!(launched, ["start", "start", "delete", "delete"]);
}

#[test]
fn lab_container_processes_are_not_helpers() {
    for r in lab_records().into_iter().filter(|r| r.role == "container") {
        assert_eq!(parse_helper(&r.exe, &r.argv), None, "{:?}", r.argv);
    }
}

// ---- conmon spellings ------------------------------------------------------------------------

const UID: &str = "0a15cd78-757d-4322-9f35-94f7c42860b4";

#[test]
fn conmon_accepts_every_spelling() {
    let name = format!("k8s_c_p_ns_{UID}_2");
    let spellings = [
        format!("conmon -c ID -n {name} -l /l -r /rt"),
        format!("/usr/bin/conmon --cid ID --name {name} --log-path /l --runtime /rt"),
        format!("conmon --cid=ID --name={name} --log-path=k8s-file:/l --runtime=/rt"),
        format!("conmon -u UU -c ID -s -t -n {name} -l journald -l k8s-file:/l -r /rt"),
        format!("conmon -ti -c ID --cuuid UU -n {name} --log-path k8s-stream-file:/l -r /rt"),
        format!(
            "conmon --api-version 1 -c ID -n {name} -l /l --runtime-arg -c --runtime-arg=-n -r /rt"
        ),
        format!("conmon -c ID -n {name} -l /l -r /rt --exit-command-arg -c --exit-command-arg X"),
    ];
    for s in &spellings {
        let h = helper(s);
        assert_eq!(h.kind, HelperKind::Conmon, "{s}");
        assert_eq!(h.container_id.as_deref(), Some("ID"), "{s}");
        assert_eq!(h.name.as_deref(), Some(name.as_str()), "{s}");
        assert_eq!(h.log_path.as_deref(), Some("/l"), "{s}");
        assert_eq!(h.runtime_path.as_deref(), Some("/rt"), "{s}");
        let k = h.k8s.as_ref().unwrap_or_else(|| panic!("{s}: k8s"));
        assert_eq!(
            (k.container.as_str(), k.pod.as_str(), k.namespace.as_str()),
            ("c", "p", "ns")
        );
        assert_eq!((k.pod_uid.as_str(), k.attempt), (UID, Some(2)), "{s}");
    }
}

#[test]
fn conmon_k8s_from_log_path_when_name_is_not_cri() {
    let h = helper(&format!(
        "conmon -c ID -n plain -l /var/log/pods/ns_pod-1_{UID}/ctr/4.log"
    ));
    let k = h.k8s.expect("from -l");
    assert_eq!(
        (k.namespace.as_str(), k.pod.as_str(), k.container.as_str()),
        ("ns", "pod-1", "ctr")
    );
    assert_eq!(k.attempt, Some(4));
    assert_eq!(h.name.as_deref(), Some("plain"));
}

#[test]
fn conmon_pod_infra_container() {
    let h = helper(&format!(
        "conmon -c SB -n k8s_POD_web-0_default_{UID}_0 -l /var/log/pods/default_web-0_{UID}/SB.log"
    ));
    let k = h.k8s.expect("infra CRI name");
    assert!(k.is_pod_infra());
    assert_eq!(k.pod, "web-0");
}

#[test]
fn conmon_log_path_drivers() {
    for (l, want) in [
        ("-l journald:/j", Some("/j")),
        ("-l journald", None),
        ("-l none", None),
        ("-l passthrough", None),
        ("-l journald:/j -l k8s-file:/f", Some("/f")),
        ("-l k8s-file:", None),
        ("-l bogus:/x", None),
    ] {
        assert_eq!(
            helper(&format!("conmon -c ID {l}")).log_path.as_deref(),
            want,
            "{l}"
        );
    }
}

#[test]
fn conmon_malformed_values() {
    let h = helper("conmon -n k8s_ -c");
    assert_eq!(
        (h.name.as_deref(), h.k8s, h.container_id),
        (Some("k8s_"), None, None)
    );
    let h = helper("conmon -n k8s_a_b_c -l /var/log/pods/x/y/z.log");
    assert_eq!(h.k8s, None, "too few parts, bad log path");
    let h = parse_helper(
        "conmon",
        &["conmon".into(), "--cid=".into(), "-n".into(), String::new()],
    )
    .expect("conmon");
    assert_eq!((h.container_id, h.name), (None, None), "empty values");
    assert!(parse_helper("conmon", &[])
        .is_some_and(|h| h.kind == HelperKind::Conmon && h.container_id.is_none()));
}

// ---- conmon-rs -------------------------------------------------------------------------------

const SB: &str = "76140a26677b1512e18864b5c1bfb31a2847d581721a64cd7f7633fb2a62ab66";

#[test]
fn conmonrs_is_a_pod_level_monitor() {
    let dir = format!("/var/lib/containers/storage/overlay-containers/{SB}/userdata");
    // As cri-o's conmon-rs client builds argv (toArgs), old releases' --cgroup-manager, and
    // clap's other spellings.
    for line in [
        format!("/usr/bin/conmonrs --runtime /usr/bin/crun --runtime-dir {dir} --runtime-root /run/crun --log-level info --log-driver systemd"),
        format!("conmonrs --runtime=/usr/bin/crun --runtime-dir={dir} --log-level debug --cgroup-manager systemd --enable-tracing --tracing-endpoint http://127.0.0.1:4317"),
        format!("conmonrs -r/usr/bin/crun -l info -d none -c cgroupfs --runtime-dir {dir}"),
        format!("conmonrs -er=/usr/bin/crun --skip-fork --runtime-dir {dir} --runtime-root /run/runc"),
        format!("conmonrs --runtime-dir {dir}/ -r /usr/bin/crun"),
        // OpenShift's name for it.
        format!("/usr/bin/crio-conmonrs --runtime /usr/bin/crun --runtime-dir {dir} --runtime-root /run/crun --log-level info --log-driver systemd"),
    ] {
        let h = helper(&line);
        assert_eq!(h.kind, HelperKind::Conmon, "{line}");
        assert!(h.pod_level, "{line}");
        assert_eq!(h.sandbox_id.as_deref(), Some(SB), "{line}");
        assert_eq!(h.runtime_path.as_deref(), Some("/usr/bin/crun"), "{line}");
        assert_eq!((h.container_id, h.k8s, h.name), (None, None, None), "{line}");
        assert_eq!((h.runtime_command, h.exec), (None, false), "{line}");
    }
    // The namespace holder it forks (argv[0] is its own).
    let h = helper(&format!(
        "/usr/bin/conmonrs pause --base-path /var/run --pod-id={SB} --ipc --net --uts"
    ));
    assert_eq!(h.runtime_command.as_deref(), Some("pause"));
    assert_eq!(h.sandbox_id.as_deref(), Some(SB));
    assert!(h.pod_level);
    let h = helper("conmonrs pause -p /var/run --user -u 0_1000_1 -g 0_1000_1 --pod-id abc");
    assert_eq!(h.sandbox_id.as_deref(), Some("abc"));
    // Option values are not options, and a directory that is not a storage one says nothing.
    for line in [
        "conmonrs --runtime /usr/bin/crun --runtime-dir /run/conmonrs/x",
        "conmonrs --log-level --runtime-dir /var/lib/containers/storage/overlay-containers/ID/userdata",
        "conmonrs --runtime-dir /var/lib/containers/storage/overlay/0123/userdata",
        "conmonrs --runtime-dir",
        "conmonrs --version full",
        "conmonrs",
    ] {
        let h = helper(line);
        assert!(h.pod_level && h.sandbox_id.is_none(), "{line}: {h:?}");
        assert_eq!(h.runtime_command, None, "{line}");
    }
    let h = helper(&format!("conmonrs --log-level --runtime-dir -r {dir}"));
    assert_eq!(
        (h.runtime_path.as_deref(), h.sandbox_id),
        (Some(dir.as_str()), None),
        "--log-level swallows --runtime-dir; -r then takes the directory"
    );
    for (exe, line) in [
        ("conmon-rs", "conmon-rs -r x"),
        ("conmonrs.sh", "conmonrs.sh -r x"),
    ] {
        assert_eq!(parse_helper(exe, &argv(line)), None, "{exe}");
    }
}

// ---- shims -----------------------------------------------------------------------------------

#[test]
fn shim_forms() {
    let h = helper("/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id ABC start");
    assert_eq!(
        (h.kind, h.namespace.as_deref(), h.container_id.as_deref()),
        (HelperKind::Shim, Some("k8s.io"), Some("ABC"))
    );
    assert_eq!(h.runtime_command.as_deref(), Some("start"));

    let h = helper("containerd-shim-runc-v2 --namespace=moby -debug --id=X -address /a");
    assert_eq!(
        (
            h.namespace.as_deref(),
            h.container_id.as_deref(),
            h.runtime_command
        ),
        (Some("moby"), Some("X"), None)
    );

    // Legacy v1 shim (docker 18-19, containerd 1.x "io.containerd.runtime.v1.linux").
    let h = helper("containerd-shim -namespace moby -workdir /var/lib/containerd/io.containerd.runtime.v1.linux/moby/DEADBEEF -address /run/containerd/containerd.sock -containerd-binary /usr/bin/containerd -runtime-root /var/run/docker/runtime-runc -systemd-cgroup");
    assert_eq!(
        (h.namespace.as_deref(), h.container_id.as_deref()),
        (Some("moby"), Some("DEADBEEF"))
    );

    // comm is truncated to 15 bytes; argv[0] still has the full path.
    let a = argv("/usr/bin/containerd-shim-runc-v2 -namespace n -id I");
    assert_eq!(
        parse_helper("containerd-shim", &a).map(|h| h.kind),
        Some(HelperKind::Shim)
    );
    assert_eq!(
        parse_helper("containerd-shim-runsc-v1", &a).map(|h| h.kind),
        Some(HelperKind::Shim)
    );
    // Go's flag stops at the first positional: "-id" after "start" is not a flag.
    assert_eq!(
        helper("containerd-shim-runc-v2 -namespace n start -id late").container_id,
        None
    );
}

// ---- runc / crun -----------------------------------------------------------------------------

#[test]
fn runtime_forms() {
    let cases = [
        ("runc --root /run/runc --systemd-cgroup create --bundle /b/ID --pid-file /p --console-socket /s --no-pivot ID", "create", Some("ID")),
        ("runc --root=/run/runc --log /l --log-format json --debug start ID", "start", Some("ID")),
        ("runc exec --process /p.json --detach --pid-file /p ID", "exec", Some("ID")),
        ("runc exec -d -p /p.json -e A=B -u 0 -t --cap CAP_X ID", "exec", Some("ID")),
        ("runc kill ID KILL", "kill", Some("ID")),
        ("runc kill --all ID 9", "kill", Some("ID")),
        ("runc delete -f ID", "delete", Some("ID")),
        ("runc delete ID --force", "delete", Some("ID")),
        ("runc state ID", "state", Some("ID")),
        ("runc ps -f json ID", "ps", Some("ID")),
        ("runc update -r /res.json ID", "update", Some("ID")),
        ("runc run -d -b /b --keep ID", "run", Some("ID")),
        ("runc -root /r create -b /b ID", "create", Some("ID")),
        ("runc list -f json", "list", None),
        ("runc init", "init", None),
        ("runc frobnicate ID", "frobnicate", None),
        ("crun --cgroup-manager=systemd --log=journald:x create -b/b --config=/c.json ID", "create", Some("ID")),
        ("crun --root /run/crun exec --process /p ID", "exec", Some("ID")),
        ("/usr/local/bin/crun-wasm start ID", "start", Some("ID")),
        ("runc -- create ID", "create", Some("ID")),
    ];
    for (line, cmd, id) in cases {
        let h = helper(line);
        assert_eq!(h.kind, HelperKind::Runtime, "{line}");
        assert_eq!(h.runtime_command.as_deref(), Some(cmd), "{line}");
        assert_eq!(h.container_id.as_deref(), id, "{line}");
    }
    let h = helper("runc --version");
    assert_eq!((h.runtime_command, h.container_id), (None, None));
    // Truncated argv: the option value is cut off, nothing is invented.
    assert_eq!(helper("runc --root").runtime_command, None);
    assert_eq!(helper("runc create --bundle").container_id, None);
}

#[test]
fn runc_reexec_is_found_through_argv0() {
    let a = argv("runc init");
    let h = parse_helper("/proc/self/exe", &a).expect("runc init via /proc/self/exe");
    assert_eq!(
        (h.kind, h.runtime_command.as_deref()),
        (HelperKind::Runtime, Some("init"))
    );
    assert!(parse_helper("/memfd:runc_cloned:/proc/self/exe (deleted)", &a).is_some());
}

// ---- not helpers, malformed input -------------------------------------------------------------

#[test]
fn non_helpers_are_none() {
    for (exe, line) in [
        ("/bin/sh", "/bin/sh -c conmon"),
        ("bash", "bash"),
        ("runcx", "runcx create ID"),
        ("conmon.sh", "conmon.sh -c ID"),
        ("containerd", "containerd --address /x"),
        ("/usr/bin/ctr", "ctr run -d img c1"),
        ("", ""),
        ("/", "/"),
        ("podman", "podman run x"),
    ] {
        assert_eq!(parse_helper(exe, &argv(line)), None, "{exe} {line}");
    }
    assert_eq!(parse_helper("", &[]), None);
}

#[test]
fn fuzz_random_argv_never_panics_and_only_reports_what_is_there() {
    const EXES: &[&str] = &[
        "conmon",
        "/usr/bin/conmon",
        "conmonrs",
        "runc",
        "crun",
        "containerd-shim-runc-v2",
        "containerd-shim",
        "sh",
    ];
    const TOKENS: &[&str] = &[
        "-c",
        "--cid",
        "--cid=",
        "-n",
        "--name=k8s_",
        "-l",
        "--log-path=k8s-file:",
        "-r",
        "-e",
        "-ti",
        "-u",
        "--runtime-arg",
        "-namespace",
        "-id",
        "--id=",
        "-workdir",
        "start",
        "create",
        "exec",
        "kill",
        "delete",
        "init",
        "--root",
        "-b",
        "-bX",
        "--",
        "-",
        "",
        "=",
        "--=",
        "k8s_a_b_c_0a1b_1",
        "k8s_a_b_c_d_e_f",
        "/var/log/pods/n_p_0a1b/c/0.log",
        "ID",
        "é",
        "\u{0}",
        "\u{fffd}",
        "-\u{fffd}",
        "a_b",
        "/x/y/",
        "k8s-file:",
        "journald:",
        "0",
        "-1",
        "--runtime-dir",
        "--runtime-dir=/var/lib/containers/storage/overlay-containers/a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90/userdata",
        "/var/lib/containers/storage/overlay-containers/a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90/userdata",
        "/x-containers/0/userdata",
        "pause",
        "--pod-id",
        "--pod-id=",
        "-rX",
        "-er=",
        "-l",
    ];
    let mut rng = Rng::new(0x5eed_a77b);
    let mut seen_some = 0;
    let mut pod_sandboxes = 0;
    for _ in 0..20_000 {
        let exe = rng.pick(EXES);
        let n = rng.below(12);
        let mut a = vec![exe.to_owned()];
        a.extend((0..n).map(|_| rng.pick(TOKENS).to_owned()));
        let Some(h) = parse_helper(exe, &a) else {
            assert_eq!(exe, "sh", "{a:?}");
            continue;
        };
        seen_some += 1;
        for v in [
            &h.container_id,
            &h.name,
            &h.runtime_path,
            &h.namespace,
            &h.log_path,
            &h.runtime_command,
            &h.sandbox_id,
        ]
        .into_iter()
        .flatten()
        {
            assert!(!v.is_empty(), "{a:?}: empty value reported");
            assert!(
                a[1..].iter().any(|t| t.contains(v.as_str())),
                "{a:?}: {v:?} is not in argv"
            );
        }
        assert_eq!(
            h.pod_level,
            exe == "conmonrs",
            "{a:?}: only conmon-rs is pod-level"
        );
        if h.sandbox_id.is_some() {
            assert!(h.pod_level && h.container_id.is_none(), "{a:?}: {h:?}");
            pod_sandboxes += 1;
        }
        if let Some(k) = &h.k8s {
            for part in [&k.container, &k.pod, &k.namespace, &k.pod_uid] {
                assert!(!part.is_empty() && !part.contains('_'), "{a:?}: {k:?}");
            }
        }
    }
    assert!(
        seen_some > 10_000,
        "the generator should mostly produce helpers"
    );
    assert!(
        pod_sandboxes > 30,
        "the generator should reach conmon-rs sandbox ids, got {pod_sandboxes}"
    );
}
