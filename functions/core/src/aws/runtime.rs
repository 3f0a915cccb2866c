//! The function process under the Lambda runtime: JSON logs with the
//! invocation's span, the deadline kept, SIGTERM answered, failures
//! reported by kind.

use super::*;

/// JSON log lines on stdout (Lambda's JSON log format reads them as they
/// are). Level from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok())
        .map(|level| level.to_ascii_lowercase())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},pgp=warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pgp=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        // The invocation's span (request id, function) on every line.
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .try_init();
}

/// The `main` of every function binary. Under a Lambda runtime API: JSON
/// logs, the clients built once, then each event to [`Lambda::handle`].
/// Elsewhere (no `AWS_LAMBDA_RUNTIME_API`): one run on the embedded defaults
/// with an event file ([`crate::function::main`]).
pub async fn serve(function: Function) -> std::result::Result<(), lambda_runtime::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Ok(crate::function::main(function).await?);
    }
    init_logging();
    let lambda = Arc::new(Lambda::from_env().await?);
    let margin = deadline_margin()?;
    let in_flight: InFlight = Arc::default();
    tokio::spawn(stop_on_sigterm(function, in_flight.clone()));
    let handler = move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
        let span = tracing::info_span!(
            "invocation",
            request_id = %event.context.request_id,
            function = function.name()
        );
        let invocation = invocation(lambda.clone(), function, event, margin, in_flight.clone());
        tracing::Instrument::instrument(invocation, span)
    };
    lambda_runtime::run(lambda_runtime::service_fn(handler)).await
}

/// One invocation: the event handled within the time it has, the failure
/// logged by kind, the metrics line written.
pub(super) async fn invocation(
    lambda: Arc<Lambda>,
    function: Function,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
    margin: Duration,
    in_flight: InFlight,
) -> std::result::Result<Response, lambda_runtime::Diagnostic> {
    let _marked = InFlightMark::new(&in_flight, &event.context.request_id);
    let left = time_left(event.context.deadline(), margin);
    tracing::info!(budget_ms = left.map(|l| l.as_millis() as u64), "invocation");
    // A long conversion hands the rest on with a quarter of the budget left
    // (time to finish the writes in flight), rather than being cut off.
    let hand_off_by = left.map(|l| std::time::Instant::now() + l.mul_f64(HAND_OFF_AT));
    let work = crate::stages::with_hand_off_by(hand_off_by, lambda.handle(function, event.payload));
    let response = match left {
        None => work.await,
        Some(left) => tokio::time::timeout(left, work).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                operation: format!("{} invocation", function.name()),
                after: left,
            })
        }),
    };
    if let Err(e) = &response {
        tracing::error!(kind = e.kind(), retryable = e.retryable(), error = %e, "failed");
    }
    crate::metrics::emit(function, &lambda.pipeline.ctx.config.name, &response);
    response.map_err(diagnostic)
}

/// The share of an invocation's budget after which long work hands on.
const HAND_OFF_AT: f64 = 0.75;

/// The request id of the invocation being handled, if any.
pub(super) type InFlight = Arc<std::sync::Mutex<Option<String>>>;

/// Marks an invocation in flight for as long as it lives.
pub(super) struct InFlightMark(InFlight);

impl InFlightMark {
    fn new(in_flight: &InFlight, request_id: &str) -> Self {
        if let Ok(mut current) = in_flight.lock() {
            *current = Some(request_id.to_string());
        }
        Self(in_flight.clone())
    }
}

impl Drop for InFlightMark {
    fn drop(&mut self) {
        if let Ok(mut current) = self.0.lock() {
            *current = None;
        }
    }
}

/// On SIGTERM (the runtime shutting down, a container stopped), one log
/// line naming the invocation cut short, then exit at once. Stopping
/// mid-write is safe: an object is committed whole or not at all (an
/// unfinished multipart upload is invisible and the bucket's lifecycle
/// rule aborts it), and the event's retry redoes only what is missing.
pub(super) async fn stop_on_sigterm(function: Function, in_flight: InFlight) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut sigterm) = signal(SignalKind::terminate()) else {
        tracing::warn!("cannot listen for SIGTERM");
        return;
    };
    sigterm.recv().await;
    let request_id = in_flight.lock().ok().and_then(|current| current.clone());
    match request_id {
        Some(request_id) => tracing::warn!(
            function = function.name(),
            request_id,
            "SIGTERM during an invocation: stopping now; what it wrote is whole, and its event's retry completes it"
        ),
        None => tracing::info!(function = function.name(), "SIGTERM between invocations: stopping"),
    }
    // 128 + SIGTERM, as a shell reports a process ended by it.
    std::process::exit(143);
}

/// How long before its Lambda deadline an invocation stops on its own
/// (`DEADLINE_MARGIN_SECS`, default 10 s, at most a tenth of the time
/// left): time to log, emit the metrics
/// and answer with an error that names the cause, where being killed at
/// the deadline would leave only "Task timed out". Whatever the stopped
/// work wrote stays whole, and the retry carries on from it.
pub(super) fn deadline_margin() -> Result<Duration> {
    match std::env::var("DEADLINE_MARGIN_SECS") {
        Err(_) => Ok(Duration::from_secs(10)),
        Ok(v) => v
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| Error::Config(format!("DEADLINE_MARGIN_SECS: not a number: {v:?}"))),
    }
}

/// The time an invocation may run: until `margin` before its deadline, or
/// a tenth of the time left when that is less (a function given a few
/// seconds keeps most of them). `None` for a deadline already past when
/// the invocation starts, which Lambda never hands out but local
/// emulators do (they send the invoke time): then only the calls' own
/// limits hold.
pub(super) fn time_left(deadline: std::time::SystemTime, margin: Duration) -> Option<Duration> {
    let left = deadline.duration_since(std::time::SystemTime::now()).ok()?;
    Some(left.saturating_sub(margin.min(left / 10)))
}

/// A failure as Lambda records it: `errorType` names the kind and whether a
/// retry can help (`Store.Retryable`, `BadInput.Permanent`), so a
/// dead-letter queue reads without opening the logs.
pub(super) fn diagnostic(error: Error) -> lambda_runtime::Diagnostic {
    let verdict = if error.retryable() {
        "Retryable"
    } else {
        "Permanent"
    };
    lambda_runtime::Diagnostic {
        error_type: format!("{}.{verdict}", error.kind()),
        error_message: error.to_string(),
    }
}
