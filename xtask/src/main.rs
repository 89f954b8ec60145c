//! `cargo xtask`: set up the toolchain, build the kernel and user programs, run, test, bench.
mod arch;
mod bench;
mod build;
mod debs;
mod image;
mod kernels;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "podtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (nightly + rust-src, llvm-22-dev, bpf-linker); idempotent.
    Setup {
        /// Also install the container runtimes and peers the tests and benchmarks use.
        #[arg(long)]
        runtimes: bool,
    },
    /// Build the eBPF object and the podtrace binary (release).
    Build,
    /// Set up, build and run podtrace as root; arguments after `--` go to podtrace (default: `run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build and run every test: lints, unit tests, root integration tests, kernel matrix, bench smoke.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only run integration tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Benchmarks: the same exec storm with no tracer, podtrace and peers, podtrace start-up
    /// and cgroup churn; writes BENCHMARKS.md. `--soak`: the long run instead.
    Bench {
        /// Short smoke run (CI): small storm, one repetition, small churn.
        #[arg(long)]
        quick: bool,
        /// Only the cgroup churn section (prints; writes nothing).
        #[arg(long, conflicts_with = "soak")]
        churn: bool,
        /// Cgroups for the churn (memory read at each quarter); default 20000, --quick 1000.
        #[arg(long, value_name = "N")]
        churn_cgroups: Option<usize>,
        /// The soak: 1,000,000 paced execs and 20,000 cgroups against one podtrace, its memory
        /// and CPU every 10 s; PASS/FAIL printed; the full sizes write BENCHMARKS.md and a plot.
        #[arg(long, conflicts_with = "quick")]
        soak: bool,
        /// Soak: exec+exit pairs (default 1000000; fewer: a trial, nothing written).
        #[arg(long, value_name = "N", requires = "soak")]
        soak_execs: Option<usize>,
        /// Soak: cgroups created and removed (default 20000).
        #[arg(long, value_name = "N", requires = "soak")]
        soak_cgroups: Option<usize>,
        /// Soak: exec starts per second (default: half the flat-out rate, measured first).
        #[arg(long, value_name = "R", requires = "soak")]
        soak_rate: Option<f64>,
    },
    /// Build the container images (static binary on scratch) for amd64 and arm64, and their
    /// manifest list.
    Image {
        /// Only this architecture (amd64, arm64); repeatable. The manifest list needs both.
        #[arg(long, value_parser = arch::Arch::parse)]
        arch: Vec<arch::Arch>,
    },
    /// Validate the deploy/ manifests (kubernetes-validate, each kustomization rendered).
    Manifests,
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels (amd64) and 6.1 and 6.12 (arm64) under QEMU
    /// (cgroup v2 and v1-only) and check podtrace in each.
    Kernels {
        /// Only the kernels of this architecture (amd64, arm64); repeatable.
        #[arg(long, value_parser = arch::Arch::parse)]
        arch: Vec<arch::Arch>,
        /// Refresh the private apt lists even if they are less than a day old.
        #[arg(long)]
        refresh: bool,
        /// Only this kernel series (5.10, 6.1, 6.12); repeatable.
        #[arg(long)]
        series: Vec<String>,
        /// Only this cgroup mode (v2, v1); repeatable.
        #[arg(long)]
        mode: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.cmd {
        Cmd::Setup { runtimes } => {
            setup::toolchain().and_then(|()| if runtimes { setup::runtimes() } else { Ok(()) })
        }
        Cmd::Build => setup::toolchain().and_then(|()| build::all().map(|_| ())),
        Cmd::Run { args } => run(args),
        Cmd::Test { no_lint, filter } => test(no_lint, filter),
        Cmd::Bench {
            quick,
            churn,
            churn_cgroups,
            soak,
            soak_execs,
            soak_cgroups,
            soak_rate,
        } => {
            let opts = bench::Options {
                quick,
                churn_only: churn,
                churn_cgroups,
                soak: soak.then_some(bench::SoakOptions {
                    execs: soak_execs,
                    cgroups: soak_cgroups,
                    rate: soak_rate,
                }),
            };
            setup::toolchain()
                .and_then(|()| setup::runtimes())
                .and_then(|()| build::all())
                .and_then(|_| bench::run(&opts))
        }
        Cmd::Image { arch } => setup::toolchain().and_then(|()| image::build(&arch)),
        Cmd::Manifests => image::validate_manifests(),
        Cmd::Kernels {
            arch,
            refresh,
            series,
            mode,
        } => setup::toolchain().and_then(|()| {
            kernels::run(&kernels::Opts {
                refresh,
                series,
                modes: mode,
                archs: arch,
            })
        }),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        let code = if e.downcast_ref::<setup::CannotInstall>().is_some() {
            2
        } else {
            1
        };
        std::process::exit(code);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    setup::toolchain()?;
    let bin = build::all()?;
    let args = if args.is_empty() {
        vec!["run".to_string()]
    } else {
        args
    };
    util::require_root("podtrace loads eBPF programs")?;
    util::exec_replace(&bin, &args)
}

fn test(no_lint: bool, filter: Option<String>) -> Result<()> {
    setup::toolchain()?;
    setup::runtimes()?;
    let bin = build::all()?;
    let root = util::workspace_root();
    if !no_lint {
        util::step("cargo fmt --check")?;
        util::cargo(&root, &["fmt", "--all", "--", "--check"], &[])?;
        util::step("cargo clippy -D warnings")?;
        util::cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
        build::lint_ebpf()?;
    }
    util::step("unit tests (no root)")?;
    util::cargo(
        &root,
        &[
            "test",
            "--release",
            "-p",
            "podtrace",
            "-p",
            "podtrace-common",
            "-p",
            "xtask",
        ],
        &[],
    )?;
    util::require_root("the integration tests load eBPF programs and start containers")?;
    // tests/tests/image.rs runs the image: build it from this tree first.
    image::build(&[])?;
    util::step("root integration tests (real kernel, processes, containers)")?;
    let bin_env = bin.display().to_string();
    let mut args = vec!["test", "--release", "-p", "podtrace-tests", "--"];
    if let Some(f) = filter.as_deref() {
        args.push(f);
    }
    args.extend(["--test-threads", "2"]);
    util::cargo(&root, &args, &[("PODTRACE_BIN", bin_env.as_str())])?;
    util::step(
        "kernel matrix (cargo xtask kernels: amd64 5.10, 6.1, 6.12 and arm64 6.1, 6.12 under QEMU, cgroup v2 and v1)",
    )?;
    let matrix = kernels::run(&kernels::Opts {
        refresh: false,
        series: Vec::new(),
        modes: Vec::new(),
        archs: Vec::new(),
    });
    match &matrix {
        Err(e) if e.downcast_ref::<setup::CannotInstall>().is_some() => return matrix,
        // Failed checks must not hide the steps after them: report them all, fail at the end.
        Err(e) => eprintln!(
            "xtask: {e:#}\n    (continuing with the remaining steps; the test fails at the end)"
        ),
        Ok(()) => {}
    }
    util::step("validate deploy/kubernetes manifests")?;
    image::validate_manifests()?;
    util::step("benchmark smoke (cargo xtask bench --quick; asserts nothing about speed)")?;
    bench::run(&bench::Options {
        quick: true,
        ..bench::Options::default()
    })?;
    matrix
}
