//! Tracing set-up for every binary: JSON lines when Lambda asks for them, compact text otherwise.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber once, at the top of `main`.
///
/// - `AWS_LAMBDA_LOG_FORMAT=JSON` (set by Lambda's advanced logging controls) selects JSON lines
///   that CloudWatch Logs Insights can query; anything else gives one compact text line per event.
/// - The level comes from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, defaulting to `info`; a
///   level, or `target=level` directives (`info,redis=warn`). Targets, not `EnvFilter`: no
///   span or field filters, and no regex engine in every binary.
/// - No timestamps or colours under Lambda (CloudWatch adds the time and shows escape codes
///   raw), and no colours when stdout is not a terminal.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    // Lambda's levels are TRACE..ERROR and FATAL; tracing has no FATAL.
    let level = level.to_lowercase().replace("fatal", "error");
    let filter: Targets = level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));

    let colour = !in_lambda && std::io::IsTerminal::is_terminal(&std::io::stdout());
    // The builder's own limit (INFO by default) would cap what `filter` lets through.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_target(false)
        .with_ansi(colour);
    // A second initialisation (tests calling init twice) is harmless, so its error is ignored.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .finish()
            .with(filter)
            .try_init()
    } else if in_lambda {
        builder
            .compact()
            .without_time()
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.compact().finish().with(filter).try_init()
    };
}

/// The Lambda function's name (`AWS_LAMBDA_FUNCTION_NAME`), the `Function` dimension of the
/// EMF metric lines; `None` outside Lambda, where nobody collects them.
pub fn lambda_function_name() -> Option<String> {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok()
}

/// The Lambda function's memory in bytes (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MiB); `None`
/// outside Lambda.
pub fn lambda_memory_bytes() -> Option<u64> {
    let mib: u64 = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()?
        .parse()
        .ok()?;
    Some(mib << 20)
}
