//! The OTLP export path: a bounded queue in front of a background exporter.
//!
//! The SDK's own batch processor would do most of this, but the mesh needs
//! three things spelled out: finishing a span never waits (a full queue
//! drops the span and counts it), a collector that is down or slow costs
//! bounded work (each export attempt has a timeout, and a failed export's
//! spans are counted as dropped, not retried forever), and flush/shutdown
//! wait a bounded time. The exporter runs on its own thread with its own
//! single-threaded tokio runtime, so it needs no runtime from the caller,
//! cannot be starved by a busy one, and survives the caller's runtime (a
//! test's) shutting down first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::TelemetryError;
use crate::meters::SPANS_DROPPED_TOTAL;

/// Spans per export request.
pub(crate) const MAX_BATCH: usize = 512;
/// How long a partial batch waits for more spans.
pub(crate) const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The most one export attempt (with the exporter's own retries) may take.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a flush or shutdown waits for the queue to drain.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time a caller waits beyond the worker's own deadline: a command
/// that arrives during an export is seen only when that export ends.
const GRACE: Duration = Duration::from_millis(500);

/// Tuning of an [`ExportProcessor`]; tests shorten the times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExportSettings {
    pub queue: usize,
    pub max_batch: usize,
    pub interval: Duration,
    pub export_timeout: Duration,
    pub flush_timeout: Duration,
}

impl ExportSettings {
    /// The production settings with a queue of `queue` spans.
    pub(crate) fn with_queue(queue: usize) -> Self {
        Self {
            queue: queue.max(1),
            max_batch: MAX_BATCH,
            interval: BATCH_INTERVAL,
            export_timeout: EXPORT_TIMEOUT,
            flush_timeout: FLUSH_TIMEOUT,
        }
    }
}

/// Spans lost on the way to the collector: the process's count, and the
/// `yrd_spans_dropped_total` counter.
#[derive(Debug, Default)]
pub(crate) struct DropCounter(AtomicU64);

impl DropCounter {
    pub(crate) fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.0.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(SPANS_DROPPED_TOTAL).increment(n);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the processor asks of the worker; `done` is answered when it is done.
#[derive(Debug)]
enum Command {
    Flush {
        deadline: Instant,
        done: std_mpsc::SyncSender<()>,
    },
    Shutdown {
        deadline: Instant,
        done: std_mpsc::SyncSender<()>,
    },
}

/// A [`SpanProcessor`] handing finished spans to a background exporter
/// through a bounded queue; see the module documentation.
#[derive(Debug)]
pub(crate) struct ExportProcessor {
    spans: mpsc::Sender<SpanData>,
    commands: mpsc::UnboundedSender<Command>,
    dropped: Arc<DropCounter>,
    flush_timeout: Duration,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl ExportProcessor {
    /// Starts the export thread, builds the exporter there with `build`
    /// (inside its runtime, which tonic channels need) and returns once it
    /// is built.
    pub(crate) fn start<E, B>(
        build: B,
        settings: ExportSettings,
        dropped: Arc<DropCounter>,
    ) -> Result<Self, TelemetryError>
    where
        E: SpanExporter + 'static,
        B: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (span_tx, span_rx) = mpsc::channel(settings.queue.max(1));
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Result<(), String>>(1);
        let worker_dropped = Arc::clone(&dropped);
        let handle = std::thread::Builder::new()
            .name("yrd-span-export".to_owned())
            .spawn(move || {
                // The exporter's own work (tonic, hyper) must not produce
                // spans that come back into this queue.
                let _suppressed = Context::enter_telemetry_suppressed_scope();
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let exporter = match build() {
                        Ok(exporter) => exporter,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    Worker {
                        exporter,
                        spans: span_rx,
                        commands: command_rx,
                        dropped: worker_dropped,
                        settings,
                        batch: Vec::with_capacity(settings.max_batch),
                        healthy: true,
                    }
                    .run()
                    .await;
                });
            })
            .map_err(|source| TelemetryError::Thread {
                name: "span export",
                source,
            })?;
        let started = ready_rx.recv();
        let failure = match started {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("the export thread ended before the exporter was built".to_owned()),
        };
        if let Some(e) = failure {
            let _ = handle.join();
            return Err(TelemetryError::Exporter(e));
        }
        Ok(Self {
            spans: span_tx,
            commands: command_tx,
            dropped,
            flush_timeout: settings.flush_timeout,
            worker: Mutex::new(Some(handle)),
        })
    }

    /// Sends a command and waits (bounded) for the worker to answer.
    fn command(&self, timeout: Duration, make: fn(Instant, std_mpsc::SyncSender<()>) -> Command) -> OTelSdkResult {
        let (done_tx, done_rx) = std_mpsc::sync_channel(1);
        if self.commands.send(make(Instant::now() + timeout, done_tx)).is_err() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        match done_rx.recv_timeout(timeout + GRACE) {
            Ok(()) => Ok(()),
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout + GRACE)),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                Err(OTelSdkError::InternalFailure("the span export thread ended".to_owned()))
            }
        }
    }
}

impl SpanProcessor for ExportProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, mut span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        // The queue holds up to `export_queue` spans: each one's texts are
        // bounded, as in the recent-span buffer.
        crate::buffer::cap_span(&mut span);
        // Never wait here: this runs on the request's thread as the span ends.
        if self.spans.try_send(span).is_err() {
            self.dropped.add(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.command(self.flush_timeout, |deadline, done| Command::Flush { deadline, done })
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.command(timeout, |deadline, done| Command::Shutdown { deadline, done });
        let handle = self.worker.lock().unwrap_or_else(PoisonError::into_inner).take();
        // Join only a worker that answered: it is returning, so the join is
        // short. One that did not answer is left to finish on its own.
        if result.is_ok()
            && let Some(handle) = handle
        {
            let _ = handle.join();
        }
        result
    }
}

/// The export thread's state.
struct Worker<E> {
    exporter: E,
    spans: mpsc::Receiver<SpanData>,
    commands: mpsc::UnboundedReceiver<Command>,
    dropped: Arc<DropCounter>,
    settings: ExportSettings,
    batch: Vec<SpanData>,
    /// Whether the last export succeeded: failures are logged when the
    /// collector goes away and when it comes back, not once per batch.
    healthy: bool,
}

impl<E: SpanExporter> Worker<E> {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Commands first: a shutdown must not wait behind a full queue.
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Flush { deadline, done }) => {
                        self.flush(deadline).await;
                        let _ = done.send(());
                    }
                    Some(Command::Shutdown { deadline, done }) => {
                        self.finish(deadline).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        // The processor was dropped without a shutdown.
                        self.finish(Instant::now() + self.settings.flush_timeout).await;
                        return;
                    }
                },
                span = self.spans.recv() => match span {
                    Some(span) => {
                        self.batch.push(span);
                        if self.batch.len() >= self.settings.max_batch {
                            self.export(Instant::now() + self.settings.export_timeout).await;
                        }
                    }
                    None => {
                        self.finish(Instant::now() + self.settings.flush_timeout).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if !self.batch.is_empty() {
                        self.export(Instant::now() + self.settings.export_timeout).await;
                    }
                }
            }
        }
    }

    /// Exports what is queued until the queue is empty, an export fails
    /// (the collector just failed: trying the rest now would only wait) or
    /// the deadline passes. Returns whether the queue was emptied.
    async fn flush(&mut self, deadline: Instant) -> bool {
        loop {
            while self.batch.len() < self.settings.max_batch {
                match self.spans.try_recv() {
                    Ok(span) => self.batch.push(span),
                    Err(_) => break,
                }
            }
            if self.batch.is_empty() {
                return true;
            }
            if Instant::now() >= deadline || !self.export(deadline).await {
                return false;
            }
        }
    }

    /// The last flush: whatever it could not send is counted as dropped.
    async fn finish(&mut self, deadline: Instant) {
        // Spans ending from now on fail `try_send` and are counted there.
        self.spans.close();
        if !self.flush(deadline).await {
            let mut lost = self.batch.len();
            self.batch.clear();
            while self.spans.try_recv().is_ok() {
                lost += 1;
            }
            self.dropped.add(u64::try_from(lost).unwrap_or(u64::MAX));
        }
        let _ = self.exporter.shutdown_with_timeout(Duration::from_millis(100));
    }

    /// Exports the current batch within `export_timeout` and the deadline;
    /// on failure its spans are counted as dropped.
    async fn export(&mut self, deadline: Instant) -> bool {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.settings.max_batch));
        let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(self.settings.export_timeout);
        let outcome = match tokio::time::timeout(budget, self.exporter.export(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {budget:?}")),
        };
        match outcome {
            Ok(()) => {
                if !self.healthy {
                    tracing::info!("span export recovered");
                    self.healthy = true;
                }
                true
            }
            Err(error) => {
                self.dropped.add(count);
                if self.healthy {
                    tracing::warn!(
                        %error,
                        spans = count,
                        "span export failed; spans are dropped and counted (yrd_spans_dropped_total) until the collector answers"
                    );
                    self.healthy = false;
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::atomic::AtomicUsize;
    use std::time::SystemTime;

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// What a fake exporter does with each batch.
    #[derive(Debug, Clone, Copy)]
    enum Behaviour {
        Accept,
        Fail,
        Hang,
    }

    #[derive(Debug)]
    struct FakeExporter {
        behaviour: Behaviour,
        exported: Arc<AtomicUsize>,
    }

    impl SpanExporter for FakeExporter {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            match self.behaviour {
                Behaviour::Accept => {
                    self.exported.fetch_add(batch.len(), Ordering::SeqCst);
                    Ok(())
                }
                Behaviour::Fail => Err(OTelSdkError::InternalFailure("collector down".to_owned())),
                Behaviour::Hang => {
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        }
    }

    fn settings(queue: usize) -> ExportSettings {
        ExportSettings {
            queue,
            max_batch: 8,
            interval: Duration::from_millis(20),
            export_timeout: Duration::from_millis(100),
            flush_timeout: Duration::from_millis(500),
        }
    }

    fn start(behaviour: Behaviour, queue: usize) -> (ExportProcessor, Arc<AtomicUsize>, Arc<DropCounter>) {
        let exported = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(DropCounter::default());
        let counter = Arc::clone(&exported);
        let processor = ExportProcessor::start(
            move || {
                Ok(FakeExporter {
                    behaviour,
                    exported: counter,
                })
            },
            settings(queue),
            Arc::clone(&dropped),
        )
        .unwrap();
        (processor, exported, dropped)
    }

    fn span(n: u64, flags: TraceFlags) -> SpanData {
        let trace = TraceId::from_bytes(u128::from(n + 1).to_be_bytes());
        SpanData {
            span_context: SpanContext::new(
                trace,
                SpanId::from_bytes((n + 1).to_be_bytes()),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("s"),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[test]
    fn exports_everything_on_flush_and_shutdown() {
        let (processor, exported, dropped) = start(Behaviour::Accept, 100);
        for n in 0..20 {
            processor.on_end(span(n, TraceFlags::SAMPLED));
        }
        processor.on_end(span(99, TraceFlags::NOT_SAMPLED));
        processor.force_flush().unwrap();
        assert_eq!(exported.load(Ordering::SeqCst), 20, "unsampled spans are not exported");
        processor.on_end(span(20, TraceFlags::SAMPLED));
        processor.shutdown_with_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(exported.load(Ordering::SeqCst), 21);
        assert_eq!(dropped.get(), 0);
        // After shutdown nothing waits and everything counts as dropped.
        processor.on_end(span(21, TraceFlags::SAMPLED));
        assert_eq!(dropped.get(), 1);
        assert!(processor.shutdown_with_timeout(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn partial_batches_go_out_on_the_interval() {
        let (processor, exported, _) = start(Behaviour::Accept, 100);
        processor.on_end(span(0, TraceFlags::SAMPLED));
        let waited = Instant::now();
        while exported.load(Ordering::SeqCst) == 0 {
            assert!(waited.elapsed() < Duration::from_secs(5), "the interval never fired");
            std::thread::sleep(Duration::from_millis(5));
        }
        processor.shutdown_with_timeout(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn failed_exports_count_their_spans_as_dropped() {
        let (processor, exported, dropped) = start(Behaviour::Fail, 100);
        for n in 0..20 {
            processor.on_end(span(n, TraceFlags::SAMPLED));
        }
        // The flush stops at the first failure; shutdown drops the rest.
        let _ = processor.force_flush();
        processor.shutdown_with_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(exported.load(Ordering::SeqCst), 0);
        assert_eq!(dropped.get(), 20);
    }

    #[test]
    fn a_hanging_collector_never_blocks_on_end_and_shutdown_is_bounded() {
        let (processor, _, dropped) = start(Behaviour::Hang, 16);
        let began = Instant::now();
        for n in 0..10_000 {
            processor.on_end(span(n, TraceFlags::SAMPLED));
        }
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "on_end waited: {:?}",
            began.elapsed()
        );
        assert!(dropped.get() > 0, "a full queue drops");
        let began = Instant::now();
        let _ = processor.shutdown_with_timeout(Duration::from_millis(300));
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "shutdown waited {:?}",
            began.elapsed()
        );
        // Every span ends up counted: the hanging exports time out. Polled,
        // because a loaded machine may answer after the caller gave up.
        let waited = Instant::now();
        while dropped.get() < 10_000 {
            assert!(waited.elapsed() < Duration::from_secs(5), "dropped {}", dropped.get());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(dropped.get(), 10_000);
    }

    #[test]
    fn a_failing_build_is_an_error() {
        let result = ExportProcessor::start(
            || Err::<FakeExporter, _>("bad endpoint".to_owned()),
            settings(4),
            Arc::new(DropCounter::default()),
        );
        match result {
            Err(TelemetryError::Exporter(e)) => assert_eq!(e, "bad endpoint"),
            other => panic!("expected an exporter error, got {other:?}"),
        }
    }
}
