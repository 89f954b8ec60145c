//! Runtime helpers recognised by their exec'd name and argv: conmon, conmon-rs, containerd
//! shims, runc and crun. Each helper has a table of its options (so option values are skipped exactly as the
//! helper's own parser would) and a small function that turns the scan into a [`Helper`].

use super::argv_scan::{opt, scan, Dialect, OptSpec, Scanned};
pub use super::k8s_name::K8sName;

/// What kind of runtime helper a process is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HelperKind {
    /// conmon: one per container (and per `exec` session), parent of the container's init;
    /// also conmon-rs (`conmonrs`; OpenShift's `crio-conmonrs`), one per pod
    /// ([`Helper::pod_level`]).
    Conmon,
    /// A containerd shim (`containerd-shim-runc-v2`, `containerd-shim`, ...).
    Shim,
    /// An OCI runtime invocation: runc or crun.
    Runtime,
}

/// What a helper's argv says about the container it works for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Helper {
    pub kind: HelperKind,
    /// conmon `-c`/`--cid`; shim `-id` (legacy `containerd-shim`: last component of `-workdir`);
    /// runc/crun: the first positional after the subcommand.
    pub container_id: Option<String>,
    /// From conmon `-n k8s_<container>_<pod>_<ns>_<uid>_<attempt>`, else from conmon
    /// `-l /var/log/pods/<ns>_<pod>_<uid>/<container>/<N>.log`.
    pub k8s: Option<K8sName>,
    /// conmon `-n` raw value (podman: the container name; cri-o: the CRI name).
    pub name: Option<String>,
    /// conmon `-r`/`--runtime`.
    pub runtime_path: Option<String>,
    /// containerd shim `-namespace`.
    pub namespace: Option<String>,
    /// conmon `-l`/`--log-path`, without its `k8s-file:` / `journald:` driver prefix.
    pub log_path: Option<String>,
    /// runc/crun subcommand (`create`, `start`, `exec`, `kill`, `delete`, `state`, `init`, ...);
    /// for a shim its action (`start` / `delete`: short-lived launcher and cleanup runs),
    /// `None` for the long-lived shim.
    pub runtime_command: Option<String>,
    /// conmon `-e`/`--exec`: this conmon watches an exec session, not the container's init.
    pub exec: bool,
    /// The helper serves a whole pod, not one container: conmon-rs, which cri-o starts once
    /// per pod sandbox (`runtime_type = "pod"`) and which then runs every container of the pod.
    /// `container_id` is `None` for it.
    pub pod_level: bool,
    /// The pod sandbox a pod-level helper works for, when argv says it: conmon-rs
    /// `--runtime-dir <graph root>/<driver>-containers/<sandbox id>/userdata` (cri-o passes the
    /// infra container's storage directory) and `conmonrs pause --pod-id <id>`.
    pub sandbox_id: Option<String>,
}

impl Helper {
    fn new(kind: HelperKind) -> Helper {
        Helper {
            kind,
            container_id: None,
            k8s: None,
            name: None,
            runtime_path: None,
            namespace: None,
            log_path: None,
            runtime_command: None,
            exec: false,
            pod_level: false,
            sandbox_id: None,
        }
    }
}

/// How an executable name is matched against a helper table row.
#[derive(Clone, Copy, Debug)]
enum NameMatch {
    Exact(&'static str),
    Prefix(&'static str),
}

impl NameMatch {
    fn matches(self, name: &str) -> bool {
        match self {
            NameMatch::Exact(n) => name == n,
            NameMatch::Prefix(p) => name.starts_with(p),
        }
    }
}

struct HelperSpec {
    name: NameMatch,
    kind: HelperKind,
    parse: fn(&mut Helper, &[String]),
}

/// The helpers podtrace recognises, by executable base name. Prefixes cover the shim family
/// (`containerd-shim-runc-v2`, `-runc-v1`, `-runsc-v1`, `-kata-v2`, ...) and the 15-byte comm
/// truncation (`containerd-shim-runc-v2` has comm `containerd-shim`).
const HELPERS: &[HelperSpec] = &[
    HelperSpec {
        name: NameMatch::Exact("conmon"),
        kind: HelperKind::Conmon,
        parse: parse_conmon,
    },
    // conmon-rs installs as "conmonrs" (its Go client's binaryName); OpenShift ships it as
    // /usr/bin/crio-conmonrs (cri-o's `monitor_path` points there).
    HelperSpec {
        name: NameMatch::Exact("conmonrs"),
        kind: HelperKind::Conmon,
        parse: parse_conmonrs,
    },
    HelperSpec {
        name: NameMatch::Exact("crio-conmonrs"),
        kind: HelperKind::Conmon,
        parse: parse_conmonrs,
    },
    HelperSpec {
        name: NameMatch::Prefix("containerd-shim"),
        kind: HelperKind::Shim,
        parse: parse_shim,
    },
    HelperSpec {
        name: NameMatch::Prefix("docker-containerd-shim"),
        kind: HelperKind::Shim,
        parse: parse_shim,
    },
    HelperSpec {
        name: NameMatch::Exact("runc"),
        kind: HelperKind::Runtime,
        parse: parse_runtime,
    },
    HelperSpec {
        name: NameMatch::Exact("crun"),
        kind: HelperKind::Runtime,
        parse: parse_runtime,
    },
    // crun picks a handler from its argv[0] ("crun-wasm", "krun").
    HelperSpec {
        name: NameMatch::Prefix("crun-"),
        kind: HelperKind::Runtime,
        parse: parse_runtime,
    },
    HelperSpec {
        name: NameMatch::Exact("krun"),
        kind: HelperKind::Runtime,
        parse: parse_runtime,
    },
];

/// Recognises a runtime helper from the exec'd filename (or comm) and argv (argv\[0\] included,
/// possibly a path). The exec'd name is tried first, then argv\[0\]: runc re-executes itself as
/// `/proc/self/exe init` or through a memfd, where only argv\[0\] says `runc`.
///
/// Returns `None` for anything that is not a runtime helper. Truncated argv is fine: options
/// cut off are simply missing from the result.
pub fn parse_helper(exe: &str, argv: &[String]) -> Option<Helper> {
    let spec = [Some(exe), argv.first().map(String::as_str)]
        .into_iter()
        .flatten()
        .map(base_name)
        .find_map(|name| HELPERS.iter().find(|h| h.name.matches(name)))?;
    let mut helper = Helper::new(spec.kind);
    (spec.parse)(&mut helper, argv.get(1..).unwrap_or_default());
    Some(helper)
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|v| !v.is_empty()).map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// conmon (GLib GOption). Table from conmon 2.1.x src/cli.c plus later additions (log-label,
// log-rotate, ...); every option is listed so that values are skipped exactly.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conmon {
    Cid,
    Name,
    LogPath,
    Runtime,
    Exec,
    Other,
}

const CONMON_OPTS: &[OptSpec<Conmon>] = &[
    opt("cid", Some('c'), true, Conmon::Cid),
    opt("name", Some('n'), true, Conmon::Name),
    opt("log-path", Some('l'), true, Conmon::LogPath),
    opt("runtime", Some('r'), true, Conmon::Runtime),
    opt("exec", Some('e'), false, Conmon::Exec),
    opt("cuuid", Some('u'), true, Conmon::Other),
    opt("bundle", Some('b'), true, Conmon::Other),
    opt("conmon-pidfile", Some('P'), true, Conmon::Other),
    opt("container-pidfile", Some('p'), true, Conmon::Other),
    opt("persist-dir", Some('0'), true, Conmon::Other),
    opt("timeout", Some('T'), true, Conmon::Other),
    opt("systemd-cgroup", Some('s'), false, Conmon::Other),
    opt("terminal", Some('t'), false, Conmon::Other),
    opt("stdin", Some('i'), false, Conmon::Other),
    opt("help", Some('h'), false, Conmon::Other),
    // C conmon declares --api-version without an argument: "--api-version 1" leaves "1" as a
    // (ignored) positional. conmon v3 takes a value; either way nothing is lost.
    opt("api-version", None, false, Conmon::Other),
    opt("exec-attach", None, false, Conmon::Other),
    opt("exec-process-spec", None, true, Conmon::Other),
    opt("exit-command", None, true, Conmon::Other),
    opt("exit-command-arg", None, true, Conmon::Other),
    opt("exit-delay", None, true, Conmon::Other),
    opt("exit-dir", None, true, Conmon::Other),
    opt("leave-stdin-open", None, false, Conmon::Other),
    opt("log-level", None, true, Conmon::Other),
    opt("log-size-max", None, true, Conmon::Other),
    opt("log-global-size-max", None, true, Conmon::Other),
    opt("log-tag", None, true, Conmon::Other),
    opt("log-label", None, true, Conmon::Other),
    opt("log-rotate", None, false, Conmon::Other),
    opt("log-max-files", None, true, Conmon::Other),
    opt("log-allowlist-dir", None, true, Conmon::Other),
    opt("no-container-partial-message", None, false, Conmon::Other),
    opt("no-new-keyring", None, false, Conmon::Other),
    opt("no-pivot", None, false, Conmon::Other),
    opt("no-sync-log", None, false, Conmon::Other),
    opt("pidfile", None, true, Conmon::Other),
    opt("replace-listen-pid", None, false, Conmon::Other),
    opt("restore", None, true, Conmon::Other),
    opt("restore-arg", None, true, Conmon::Other),
    opt("runtime-arg", None, true, Conmon::Other),
    opt("runtime-opt", None, true, Conmon::Other),
    opt("sdnotify-socket", None, true, Conmon::Other),
    opt("socket-dir-path", None, true, Conmon::Other),
    opt("sync", None, false, Conmon::Other),
    opt("syslog", None, false, Conmon::Other),
    opt("version", None, false, Conmon::Other),
    opt("full-attach", None, false, Conmon::Other),
    opt("seccomp-notify-socket", None, true, Conmon::Other),
    opt("seccomp-notify-plugins", None, true, Conmon::Other),
];

/// conmon's `-l` values are `[driver:]path`; these drivers write the container log to a file.
const CONMON_FILE_LOG_DRIVERS: &[&str] = &["k8s-file", "k8s-stream-file"];
/// Drivers whose suffix is not a file conmon writes; stripped only as a last resort.
const CONMON_OTHER_LOG_DRIVERS: &[&str] = &["journald"];

fn parse_conmon(h: &mut Helper, args: &[String]) {
    let s = scan(args, CONMON_OPTS, Dialect::GOption);
    h.container_id = non_empty(s.last(Conmon::Cid));
    h.name = non_empty(s.last(Conmon::Name));
    h.runtime_path = non_empty(s.last(Conmon::Runtime));
    h.exec = s.has_flag(Conmon::Exec);
    h.log_path = conmon_log_path(&s);
    h.k8s = h
        .name
        .as_deref()
        .and_then(K8sName::from_cri_name)
        .or_else(|| h.log_path.as_deref().and_then(K8sName::from_log_path));
}

/// The log file among conmon's (repeatable) `-l` values: a file driver's path or a bare path
/// first; failing that, whatever follows `journald:`.
fn conmon_log_path(s: &Scanned<'_, Conmon>) -> Option<String> {
    let file = s
        .all(Conmon::LogPath)
        .find_map(|v| match v.split_once(':') {
            Some((driver, path)) if CONMON_FILE_LOG_DRIVERS.contains(&driver) => Some(path),
            Some(_) => None,
            None if ["journald", "passthrough", "none", "off", "null"].contains(&v) => None,
            None => Some(v),
        });
    let other = || {
        s.all(Conmon::LogPath).find_map(|v| {
            CONMON_OTHER_LOG_DRIVERS
                .iter()
                .find_map(|d| v.strip_prefix(d)?.strip_prefix(':'))
        })
    };
    non_empty(file.or_else(other))
}

// ---------------------------------------------------------------------------------------------
// conmon-rs (clap). Table from conmon-rs server/src/config.rs (v0.1 to v1.x): global options,
// then an optional `pause` subcommand; `--cgroup-manager`/`-c` existed until v1.0 (hidden and
// ignored from v0.6). The arguments cri-o passes come from the Go client's `toArgs`:
// `--runtime`, `--runtime-dir`, `--runtime-root`, `--log-level`, `--log-driver`,
// `--enable-tracing`, `--tracing-endpoint`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConmonRs {
    Runtime,
    RuntimeDir,
    PodId,
    Other,
}

const CONMONRS_OPTS: &[OptSpec<ConmonRs>] = &[
    opt("runtime", Some('r'), true, ConmonRs::Runtime),
    opt("runtime-dir", None, true, ConmonRs::RuntimeDir),
    opt("runtime-root", None, true, ConmonRs::Other),
    opt("log-level", Some('l'), true, ConmonRs::Other),
    opt("log-driver", Some('d'), true, ConmonRs::Other),
    opt("cgroup-manager", Some('c'), true, ConmonRs::Other),
    opt("skip-fork", None, false, ConmonRs::Other),
    opt("enable-tracing", Some('e'), false, ConmonRs::Other),
    opt("tracing-endpoint", Some('t'), true, ConmonRs::Other),
    // `--version [full]` takes an optional value; read as a flag, a following "full" is a
    // positional (not a known subcommand, so ignored).
    opt("version", Some('v'), false, ConmonRs::Other),
    opt("version-json", Some('j'), false, ConmonRs::Other),
    opt("vj", None, false, ConmonRs::Other),
    opt("help", Some('h'), false, ConmonRs::Other),
];

/// `conmonrs pause`: the process conmon-rs forks to hold a pod's namespaces.
const CONMONRS_PAUSE_OPTS: &[OptSpec<ConmonRs>] = &[
    opt("pod-id", None, true, ConmonRs::PodId),
    opt("base-path", Some('p'), true, ConmonRs::Other),
    // v0.1: `--path`/`-p`.
    opt("path", None, true, ConmonRs::Other),
    opt("uid-mappings", Some('u'), true, ConmonRs::Other),
    opt("gid-mappings", Some('g'), true, ConmonRs::Other),
    opt("ipc", None, false, ConmonRs::Other),
    opt("pid", None, false, ConmonRs::Other),
    opt("net", None, false, ConmonRs::Other),
    opt("user", None, false, ConmonRs::Other),
    opt("uts", None, false, ConmonRs::Other),
    opt("help", Some('h'), false, ConmonRs::Other),
];

const CONMONRS_PAUSE: &str = "pause";

fn parse_conmonrs(h: &mut Helper, args: &[String]) {
    h.pod_level = true;
    let s = scan(args, CONMONRS_OPTS, Dialect::Clap);
    h.runtime_path = non_empty(s.last(ConmonRs::Runtime));
    h.sandbox_id = s
        .last(ConmonRs::RuntimeDir)
        .and_then(storage_container_id)
        .map(str::to_owned);
    if s.positionals.first() == Some(&CONMONRS_PAUSE) {
        h.runtime_command = Some(CONMONRS_PAUSE.to_owned());
        let sub_args = args.get(s.tail_start + 1..).unwrap_or_default();
        let p = scan(sub_args, CONMONRS_PAUSE_OPTS, Dialect::Clap);
        h.sandbox_id = non_empty(p.last(ConmonRs::PodId)).or(h.sandbox_id.take());
    }
}

/// The container id in a containers/storage directory,
/// `<root>/<driver>-containers/<64 hex id>/userdata`.
fn storage_container_id(dir: &str) -> Option<&str> {
    let comps: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    match comps.as_slice() {
        [.., store, id, "userdata"]
            if store.ends_with("-containers")
                && id.len() == 64
                && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(id)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// containerd shims (Go flag package). Table from containerd runtime/v2/shim (v2 shims) and
// cmd/containerd-shim (the legacy v1 shim).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shim {
    Id,
    Namespace,
    Workdir,
    Other,
}

const SHIM_OPTS: &[OptSpec<Shim>] = &[
    opt("id", None, true, Shim::Id),
    opt("namespace", None, true, Shim::Namespace),
    opt("workdir", None, true, Shim::Workdir),
    opt("address", None, true, Shim::Other),
    opt("publish-binary", None, true, Shim::Other),
    opt("bundle", None, true, Shim::Other),
    opt("socket", None, true, Shim::Other),
    opt("runtime-root", None, true, Shim::Other),
    opt("criu", None, true, Shim::Other),
    opt("containerd-binary", None, true, Shim::Other),
    opt("debug", None, false, Shim::Other),
    opt("systemd-cgroup", None, false, Shim::Other),
    opt("v", None, false, Shim::Other),
    opt("info", None, false, Shim::Other),
];

fn parse_shim(h: &mut Helper, args: &[String]) {
    let s = scan(args, SHIM_OPTS, Dialect::GoFlag);
    h.namespace = non_empty(s.last(Shim::Namespace));
    // The legacy shim has no -id; its workdir is .../io.containerd.runtime.v1.linux/<ns>/<id>.
    h.container_id = non_empty(s.last(Shim::Id)).or_else(|| {
        s.last(Shim::Workdir)
            .and_then(|w| w.split('/').rfind(|c| !c.is_empty()))
            .map(str::to_owned)
    });
    h.runtime_command = non_empty(s.positionals.first().copied());
}

// ---------------------------------------------------------------------------------------------
// runc (urfave/cli over Go flag) and crun (GNU argp): global options, a subcommand, then
// subcommand options mixed with positionals. Tables from `runc --help` / `runc CMD --help`
// (runc 1.1) and crun's src/*.c argp tables.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Skip;

const RUNTIME_GLOBAL_OPTS: &[OptSpec<Skip>] = &[
    opt("root", None, true, Skip),
    opt("log", None, true, Skip),
    opt("log-format", None, true, Skip),
    opt("log-level", None, true, Skip),
    opt("criu", None, true, Skip),
    opt("rootless", None, true, Skip),
    opt("cgroup-manager", None, true, Skip),
    opt("debug", None, false, Skip),
    opt("systemd-cgroup", None, false, Skip),
    opt("help", Some('h'), false, Skip),
    opt("version", Some('v'), false, Skip),
];

const CREATE_OPTS: &[OptSpec<Skip>] = &[
    opt("bundle", Some('b'), true, Skip),
    opt("config", Some('f'), true, Skip),
    opt("console-socket", None, true, Skip),
    opt("pid-file", None, true, Skip),
    opt("preserve-fds", None, true, Skip),
    opt("detach", Some('d'), false, Skip),
    opt("keep", None, false, Skip),
    opt("no-pivot", None, false, Skip),
    opt("no-new-keyring", None, false, Skip),
    opt("no-subreaper", None, false, Skip),
];

const EXEC_OPTS: &[OptSpec<Skip>] = &[
    opt("console-socket", None, true, Skip),
    opt("pidfd-socket", None, true, Skip),
    opt("cwd", None, true, Skip),
    opt("env", Some('e'), true, Skip),
    opt("user", Some('u'), true, Skip),
    opt("additional-gids", Some('g'), true, Skip),
    opt("process", Some('p'), true, Skip),
    opt("pid-file", None, true, Skip),
    opt("process-label", None, true, Skip),
    opt("apparmor", None, true, Skip),
    opt("cap", Some('c'), true, Skip),
    opt("preserve-fds", None, true, Skip),
    opt("cgroup", None, true, Skip),
    opt("tty", Some('t'), false, Skip),
    opt("detach", Some('d'), false, Skip),
    opt("no-new-privs", None, false, Skip),
    opt("ignore-paused", None, false, Skip),
];

const CHECKPOINT_OPTS: &[OptSpec<Skip>] = &[
    opt("image-path", None, true, Skip),
    opt("work-path", None, true, Skip),
    opt("parent-path", None, true, Skip),
    opt("status-fd", None, true, Skip),
    opt("page-server", None, true, Skip),
    opt("manage-cgroups-mode", None, true, Skip),
    opt("empty-ns", None, true, Skip),
    opt("bundle", Some('b'), true, Skip),
    opt("pid-file", None, true, Skip),
    opt("console-socket", None, true, Skip),
    opt("lsm-profile", None, true, Skip),
    opt("lsm-mount-context", None, true, Skip),
    opt("detach", Some('d'), false, Skip),
];

const UPDATE_OPTS: &[OptSpec<Skip>] = &[
    opt("resources", Some('r'), true, Skip),
    opt("blkio-weight", None, true, Skip),
    opt("cpu-period", None, true, Skip),
    opt("cpu-quota", None, true, Skip),
    opt("cpu-share", None, true, Skip),
    opt("cpu-rt-period", None, true, Skip),
    opt("cpu-rt-runtime", None, true, Skip),
    opt("cpu-idle", None, true, Skip),
    opt("cpuset-cpus", None, true, Skip),
    opt("cpuset-mems", None, true, Skip),
    opt("kernel-memory", None, true, Skip),
    opt("kernel-memory-tcp", None, true, Skip),
    opt("memory", None, true, Skip),
    opt("memory-reservation", None, true, Skip),
    opt("memory-swap", None, true, Skip),
    opt("pids-limit", None, true, Skip),
    opt("l3-cache-schema", None, true, Skip),
    opt("mem-bw-schema", None, true, Skip),
];

const FORMAT_OPTS: &[OptSpec<Skip>] = &[opt("format", Some('f'), true, Skip)];
const EVENTS_OPTS: &[OptSpec<Skip>] = &[opt("interval", None, true, Skip)];
const SPEC_OPTS: &[OptSpec<Skip>] = &[opt("bundle", Some('b'), true, Skip)];
/// `kill --all/-a`, `delete --force/-f`, ...: boolean only.
const NO_VALUE_OPTS: &[OptSpec<Skip>] = &[];

struct Subcommand {
    name: &'static str,
    /// Whether the first positional is a container id.
    takes_id: bool,
    opts: &'static [OptSpec<Skip>],
}

const fn sub(name: &'static str, takes_id: bool, opts: &'static [OptSpec<Skip>]) -> Subcommand {
    Subcommand {
        name,
        takes_id,
        opts,
    }
}

const RUNTIME_SUBCOMMANDS: &[Subcommand] = &[
    sub("create", true, CREATE_OPTS),
    sub("run", true, CREATE_OPTS),
    sub("start", true, NO_VALUE_OPTS),
    sub("exec", true, EXEC_OPTS),
    sub("kill", true, NO_VALUE_OPTS),
    sub("delete", true, NO_VALUE_OPTS),
    sub("state", true, NO_VALUE_OPTS),
    sub("pause", true, NO_VALUE_OPTS),
    sub("resume", true, NO_VALUE_OPTS),
    sub("ps", true, FORMAT_OPTS),
    sub("events", true, EVENTS_OPTS),
    sub("update", true, UPDATE_OPTS),
    sub("checkpoint", true, CHECKPOINT_OPTS),
    sub("restore", true, CHECKPOINT_OPTS),
    sub("list", false, FORMAT_OPTS),
    sub("spec", false, SPEC_OPTS),
    sub("features", false, NO_VALUE_OPTS),
    sub("mounts", false, NO_VALUE_OPTS),
    // runc re-executes itself as "runc init" to become the container's first process.
    sub("init", false, NO_VALUE_OPTS),
    sub("help", false, NO_VALUE_OPTS),
];

fn parse_runtime(h: &mut Helper, args: &[String]) {
    let global = scan(args, RUNTIME_GLOBAL_OPTS, Dialect::GoFlag);
    let Some(&command) = global.positionals.first() else {
        return;
    };
    h.runtime_command = non_empty(Some(command));
    let Some(subcommand) = RUNTIME_SUBCOMMANDS.iter().find(|s| s.name == command) else {
        return;
    };
    if !subcommand.takes_id {
        return;
    }
    let sub_args = args.get(global.tail_start + 1..).unwrap_or_default();
    let s = scan(sub_args, subcommand.opts, Dialect::Permuting);
    h.container_id = non_empty(s.positionals.first().copied());
}

#[cfg(test)]
mod tests;
