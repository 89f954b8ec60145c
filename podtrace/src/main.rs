//! podtrace command line entry point.

// In the binary (not the library) so that the linker takes its definitions before libc.a's;
// only the static (musl) build uses them (the tests check them on any build).
#[cfg(any(target_env = "musl", test))]
mod musl_mem;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use podtrace::check::{self, CheckOptions, Verdict};
use podtrace::cli::{
    At, CheckArgs, Cli, Command, ExportFormat, FilterArgs, HealthArgs, RunArgs, TopArgs,
    TracerArgs, TreeArgs,
};
use podtrace::error::{exit_code, Failure, EXIT_FAILURE};
use podtrace::filter::{parse_types, EventFilter};
use podtrace::live::{self, RunOptions};
use podtrace::ndjson::NdjsonWriter;
use podtrace::pipeline::{FnSink, Pipeline};
use podtrace::redact::Redactor;
use podtrace::replay::{self, Until};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

fn filter_from(f: &FilterArgs) -> Result<EventFilter> {
    Ok(EventFilter {
        pod: f.select.pod.clone(),
        namespace: f.select.namespace.clone(),
        container: f.select.container.clone(),
        containers_only: f.containers_only,
        types: f.events.as_deref().map(parse_types).transpose()?,
    })
}

fn redactor_from(t: &TracerArgs) -> Result<Redactor> {
    Redactor::new(&t.redact_args, !t.no_default_redaction)
        .map_err(|e| Failure::BadInput(format!("{e:#}")).into())
}

fn run_options(
    tracer: TracerArgs,
    filter: EventFilter,
    output: Option<std::path::PathBuf>,
    record: Option<podtrace::trace::segments::Target>,
    quiet: bool,
) -> Result<RunOptions> {
    Ok(RunOptions {
        redactor: redactor_from(&tracer)?,
        output,
        quiet,
        duration: tracer.duration,
        ring_buffer_bytes: tracer.ring_buffer_bytes,
        threads: tracer.threads,
        kernel_debug: tracer.kernel_debug,
        filter,
        record,
        node: tracer.node,
        summary: tracer.summary,
        kernel_stats: tracer.kernel_stats,
        metrics_addr: tracer.metrics_addr,
        cgroup_mode: tracer.cgroup_mode,
        cri: tracer.cri.config(),
        hold: std::time::Duration::from_millis(tracer.hold_ms),
        attach: tracer.kernel.attach,
        transport: tracer.kernel.transport,
    })
}

fn live(opts: RunOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(live::run(opts)).map(|_| ())
}

fn run_cmd(run: RunArgs) -> Result<()> {
    let filter = filter_from(&run.filters)?;
    let record = match run.record {
        Some(p) => Some(run.segments.target(p)?),
        None if run.segments.any() => {
            return Err(
                Failure::BadInput("--segment-* and --retain-* are for --record DIR".into()).into(),
            )
        }
        None => None,
    };
    live(run_options(
        run.tracer, filter, run.output, record, run.quiet,
    )?)
}

fn report_replay(s: &replay::ReplaySummary) {
    for w in &s.cut_short {
        tracing::warn!("{w}");
    }
    if s.skipped > 0 {
        tracing::warn!("--lenient: skipped {} bad records", s.skipped);
    }
}

/// `started_unix_ns` of a trace's header (time 0 of an export); of the first segment's for a
/// directory.
fn recording_start(path: &std::path::Path, lenient: bool) -> Result<Option<i64>> {
    let files = replay::files(path)?;
    let Some(file) = files.first() else {
        return Ok(None);
    };
    let mut reader = podtrace::trace::reader::TraceReader::open(file, lenient)?;
    Ok(match reader.next_record()? {
        Some((_, podtrace::trace::Record::Header(h))) => Some(h.started_unix_ns),
        _ => None,
    })
}

fn replay_cmd(
    file: std::path::PathBuf,
    filters: FilterArgs,
    lenient: bool,
    export: Option<ExportFormat>,
) -> Result<()> {
    let filter = filter_from(&filters)?;
    if let Some(ExportFormat::ChromeTrace) = export {
        let mut trace = match recording_start(&file, lenient)? {
            Some(start) => podtrace::export::ChromeTrace::with_origin(start),
            None => podtrace::export::ChromeTrace::new(),
        };
        let pipe = Pipeline::new(filter).sink(FnSink(|ev: &podtrace::output::Event| {
            trace.push(ev);
            Ok(())
        }));
        let (_, summary) = replay::replay(&file, lenient, Until::End, pipe)?;
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        serde_json::to_writer(&mut w, &trace.finish()).context("writing the trace to stdout")?;
        std::io::Write::write_all(&mut w, b"\n").context("writing the trace to stdout")?;
        std::io::Write::flush(&mut w).context("writing the trace to stdout")?;
        report_replay(&summary);
        return Ok(());
    }
    let pipe = Pipeline::new(filter).sink(NdjsonWriter::stdout());
    let (_, summary) = replay::replay(&file, lenient, Until::End, pipe)?;
    report_replay(&summary);
    Ok(())
}

fn tree_cmd(t: TreeArgs) -> Result<()> {
    let filter = podtrace::view::Filter {
        pod: t.select.pod.clone(),
        namespace: t.select.namespace.clone(),
        container: t.select.container.clone(),
        command: None,
        all: t.all,
    };
    let engine = match &t.from {
        Some(file) => {
            let until = match t.at {
                None => Until::End,
                Some(At::Offset(off)) => Until::Offset(off),
                Some(At::Unix(ns)) => Until::At(ns),
            };
            let (engine, summary) = replay::replay(
                file,
                t.lenient,
                until,
                Pipeline::new(EventFilter::default()),
            )?;
            report_replay(&summary);
            engine
        }
        // The live picture redacts argv with the default rules, as `run` does.
        None => podtrace::now::engine_from_proc(
            Redactor::new(&[], true)?,
            t.cgroup_mode,
            t.cri.config(),
        )?,
    };
    let view = podtrace::view::tree(&engine, &filter);
    if t.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).context("encoding the tree")?
        );
    } else {
        print!("{}", podtrace::view::text::render_text(&view));
    }
    Ok(())
}

fn top_cmd(t: TopArgs) -> Result<()> {
    let opts = podtrace::top::Options {
        filter: podtrace::view::Filter {
            pod: t.select.pod.clone(),
            namespace: t.select.namespace.clone(),
            container: t.select.container.clone(),
            command: t.command.clone(),
            all: t.all,
        },
        interval: t.interval,
        color: podtrace::top::color_wanted(),
        frozen: t.frozen,
    };
    match &t.from {
        Some(file) => podtrace::top::trace(file, t.lenient, t.at, t.speed, opts),
        // `run` without its NDJSON: the view filters, the pipeline keeps everything.
        None => podtrace::top::live(
            run_options(
                t.tracer,
                EventFilter::default(),
                None,
                // top records into one file (segments are `run --record DIR`'s).
                t.record.map(podtrace::trace::segments::Target::File),
                true,
            )?,
            opts,
        ),
    }
}

/// `podtrace check`: Ok(true) when no line fails.
fn check_cmd(a: CheckArgs) -> Result<bool> {
    if let Some(e) = a.cri_endpoint.as_deref().filter(|_| !a.no_cri) {
        podtrace::cri::endpoint::parse(e)
            .map_err(|err| Failure::BadInput(format!("--cri-endpoint: {err}")))?;
    }
    let report = check::check(&CheckOptions {
        ring_buffer_bytes: a.ring_buffer_bytes,
        cgroup_mode: a.cgroup_mode,
        attach: a.kernel.attach,
        transport: a.kernel.transport,
        cri: (!a.no_cri).then(|| podtrace::cri::CriConfig {
            endpoint: a.cri_endpoint.clone(),
            ..podtrace::cri::CriConfig::default()
        }),
    });
    let text = if a.json {
        check::render::json(&report).context("encoding the report")? + "\n"
    } else {
        check::render::text(&report)
    };
    print!("{text}");
    Ok(report.verdict != Verdict::Fail)
}

/// `podtrace health`: Ok(true) when /healthz answered 200.
fn health_cmd(a: HealthArgs) -> bool {
    match podtrace::health::probe(a.addr, a.timeout) {
        Ok(body) => {
            println!("{body}");
            true
        }
        Err(e) => {
            eprintln!("podtrace: unhealthy: {e}");
            false
        }
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(podtrace::exit_probe::PROBE_ARG.as_ref()) {
        podtrace::exit_probe::child();
    }
    let cli = Cli::parse();
    let stderr_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // `top` owns the terminal: its log lines wait (the last one on its bottom line) until it
    // gives the terminal back.
    let writer = if stderr_tty && matches!(cli.cmd, Command::Top(_)) {
        BoxMakeWriter::new(podtrace::top::logbuf::Buffered)
    } else {
        BoxMakeWriter::new(std::io::stderr)
    };
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(stderr_tty && !matches!(cli.cmd, Command::Top(_)))
        .init();
    let result = match cli.cmd {
        Command::Check(a) => match check_cmd(a) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::from(EXIT_FAILURE),
            Err(e) => Err(e),
        },
        Command::Health(a) => {
            return if health_cmd(a) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Command::Run(run) => run_cmd(run),
        Command::Record {
            output,
            segments,
            tracer,
        } => segments
            .target(output)
            .map_err(anyhow::Error::from)
            .and_then(|t| run_options(tracer, EventFilter::default(), None, Some(t), true))
            .and_then(live),
        Command::Replay {
            file,
            filters,
            lenient,
            export,
        } => replay_cmd(file, filters, lenient, export),
        Command::Tree(t) => tree_cmd(t),
        Command::Top(t) => top_cmd(t),
        Command::Schema => serde_json::to_string_pretty(&podtrace::output::json_schema())
            .map(|s| println!("{s}"))
            .context("encoding the schema"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podtrace: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
