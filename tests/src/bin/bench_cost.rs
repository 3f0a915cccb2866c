//! `bench_cost`: what a day costs on AWS, from counted requests and measured
//! seconds (docs/cost.md).
//!
//! ```text
//! cargo run --release -p integration-tests --bin bench_cost -- [--messages 2000] [--large-conversations 4] [--runs 3]
//! ```
//!
//! The four functions run as on Lambda (one S3 event or SQS batch per
//! invocation, the events moto's own bucket notifications produced) against
//! a moto server on a loopback port, for two shapes of a day with the same
//! number of messages: one-message conversations, and a few large
//! conversations. Nothing in the product counts: the requests are read from
//! the server's side, its access log (one werkzeug line per request: method,
//! path and query, status) and moto's request recorder (the headers, for
//! conditional writes and copies), each cut at the start and end of every
//! stage. Storage is what the chain leaves in the bucket, every version,
//! listed by boto3. Seconds are wall and CPU time of this process (the
//! functions) and of the moto server, per stage, the median of `--runs`
//! fresh chains. Lambda GB-seconds are estimated from them (docs/cost.md
//! says how), for the memory sizes in infra/template.yaml.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::function::{Function, Response};
use integration_tests::lambda_chain::{
    self as chain, sqs_batches, take_events, take_queued, BUCKET, MAIL_EVENTS, PLAIN_EVENTS,
    RAW_EVENTS,
};
use integration_tests::local::Firm;
use integration_tests::moto::{self, Moto};
use integration_tests::synth::{self, Shape};
use serde_json::{json, Value};

/// S3's list prices, us-east-1, per request: PUT, COPY, POST and LIST; GET,
/// HEAD and every other request (DELETE is free). Standard storage per
/// GB-month, Glacier Instant Retrieval (where `raw/` goes) per GB-month.
const TIER1: f64 = 0.005 / 1000.0;
const TIER2: f64 = 0.0004 / 1000.0;
const STANDARD_GB_MONTH: f64 = 0.023;
const GLACIER_IR_GB_MONTH: f64 = 0.004;
/// Lambda's list prices, us-east-1, x86_64: per GB-second, per request.
const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
const LAMBDA_REQUEST: f64 = 0.20 / 1_000_000.0;
/// The memory at which a Lambda function has one full vCPU; below it, its
/// share of a vCPU is proportionally less (AWS's documentation).
const FULL_VCPU_MB: f64 = 1769.0;
const GB: f64 = 1024.0 * 1024.0 * 1024.0;
const PREFIXES: [&str; 5] = ["raw", "plain", "mail", "state", "reports"];

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let messages = flag("--messages", 2000);
    let large = flag("--large-conversations", 4).clamp(1, messages);
    let runs = flag("--runs", 3).max(1);
    let template = Template::read(&moto::repo_root().join("infra/template.yaml"));
    println!(
        "template: memory fetch {} / decrypt {} / convert {} / import {} MB, import batch {}",
        template.memory(Function::Fetch),
        template.memory(Function::Decrypt),
        template.memory(Function::Convert),
        template.memory(Function::Import),
        template.batch_size
    );
    let shapes = [
        (
            "one-message conversations",
            Shape {
                conversations: messages,
                messages_per_conversation: 1,
                participants_per_conversation: 2,
                message_bytes: 80,
            },
        ),
        (
            "large conversations",
            Shape {
                conversations: large,
                messages_per_conversation: messages / large,
                participants_per_conversation: 2,
                message_bytes: 80,
            },
        ),
    ];
    let mut days = Vec::new();
    for (name, shape) in &shapes {
        let mut day_runs = Vec::new();
        for run in 1..=runs {
            println!(
                "{name}: {} conversations x {} messages, run {run}/{runs}",
                shape.conversations, shape.messages_per_conversation
            );
            day_runs.push(run_day(shape, template.batch_size).await);
        }
        // Half the day once more: two sizes tell a stage's fixed requests
        // (per file, per invocation) from those per message.
        let half = Shape {
            conversations: (shape.conversations / 2).max(1),
            ..*shape
        };
        println!(
            "{name}: {} conversations x {} messages, for the fit",
            half.conversations, half.messages_per_conversation
        );
        let half_run = run_day(&half, template.batch_size).await;
        days.push(Day::of(
            name,
            shape.messages(),
            day_runs,
            half.messages(),
            half_run,
        ));
    }
    for day in &days {
        day.print_measured();
    }
    print_per_million(&days, &template);
}

/// The memory sizes and the import batch size of infra/template.yaml.
struct Template {
    global_memory: u64,
    memory: BTreeMap<&'static str, u64>,
    batch_size: usize,
}

impl Template {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("infra/template.yaml");
        let lines: Vec<&str> = text.lines().collect();
        // The lines of a top-level entry (`  Name:`) of the template.
        let block = |name: &str| -> Vec<&str> {
            let head = format!("  {name}:");
            let Some(start) = lines.iter().position(|l| *l == head) else {
                return Vec::new();
            };
            lines[start + 1..]
                .iter()
                .take_while(|l| l.is_empty() || l.starts_with("   "))
                .copied()
                .collect()
        };
        let value = |lines: &[&str], key: &str| -> Option<u64> {
            lines
                .iter()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        let global_memory = value(&block("Function"), "MemorySize:").expect("Globals MemorySize");
        let memory = ["Fetch", "Decrypt", "Convert", "Import"]
            .into_iter()
            .filter_map(|f| Some((f, value(&block(&format!("{f}Function")), "MemorySize:")?)))
            .collect();
        let batch_size =
            value(&block("ImportBatchSize"), "Default:").expect("ImportBatchSize") as usize;
        Self {
            global_memory,
            memory,
            batch_size,
        }
    }

    fn memory(&self, function: Function) -> u64 {
        let name = match function {
            Function::Fetch => "Fetch",
            Function::Decrypt => "Decrypt",
            Function::Convert => "Convert",
            Function::Import => "Import",
        };
        self.memory.get(name).copied().unwrap_or(self.global_memory)
    }
}

/// One stage of one run: its invocations, seconds and the requests the
/// server saw while it ran.
#[derive(Clone)]
struct StageRun {
    name: &'static str,
    function: Function,
    invocations: u64,
    wall: f64,
    cpu: f64,
    moto_cpu: f64,
    peak_rss_mb: f64,
    requests: Requests,
}

/// S3 requests by kind, as the server logged them.
#[derive(Clone, Default, PartialEq)]
struct Requests {
    by_kind: BTreeMap<&'static str, u64>,
    /// PUTs with `If-None-Match` or `If-Match` (from the recorder).
    conditional: u64,
    /// PUTs with `x-amz-copy-source` (from the recorder).
    copies: u64,
    /// S3 answers by status class other than 2xx, e.g. `412` (a
    /// conditional write refused), `404`.
    refused: BTreeMap<u16, u64>,
    /// Requests to other services (Secrets Manager, ...), by `X-Amz-Target`.
    other: BTreeMap<String, u64>,
}

impl Requests {
    fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    fn of(&self, class: &str) -> u64 {
        self.by_kind
            .iter()
            .filter(|(kind, _)| kind.split(' ').next() == Some(class))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The price of one request of a kind (the first word is its class).
fn price(kind: &str) -> f64 {
    match kind.split(' ').next() {
        Some("PUT" | "POST" | "LIST" | "COPY") => TIER1,
        Some("DELETE") => 0.0,
        _ => TIER2,
    }
}

/// The kind of an S3 request from its method and target (path and query),
/// `None` for anything not addressed to the bucket (path-style).
fn s3_kind(method: &str, target: &str) -> Option<&'static str> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix('/')?.strip_prefix(BUCKET)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let object = rest.len() > 1;
    let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    Some(match (method, object) {
        ("HEAD", _) => "HEAD",
        ("GET", true) if has("tagging") => "GET tagging",
        ("GET", true) => "GET",
        ("GET", false)
            if has("list-type") || has("versions") || has("uploads") || query.is_empty() =>
        {
            "LIST"
        }
        ("GET", false) => "GET bucket",
        ("PUT", true) if has("tagging") => "PUT tagging",
        ("PUT", true) if has("partNumber") => "PUT part",
        ("PUT", true) => "PUT",
        ("PUT", false) => "PUT bucket",
        ("POST", true) if has("uploads") => "POST create-multipart",
        ("POST", true) if has("uploadId") => "POST complete-multipart",
        ("POST", _) => "POST",
        ("DELETE", true) if has("uploadId") => "DELETE abort-multipart",
        ("DELETE", _) => "DELETE",
        _ => "other",
    })
}

/// Where the server's two logs stood, and the clocks, when a stage began.
struct Mark {
    access: u64,
    recording: u64,
    wall: Instant,
    cpu: f64,
    moto_cpu: f64,
}

/// The moto server with its request recorder on, and the cuts of its logs.
struct Meter {
    moto: Moto,
    recording: PathBuf,
    _dir: tempfile::TempDir,
}

impl Meter {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cost")
            .tempdir()
            .expect("temp dir");
        let recording = dir.path().join("recording.jsonl");
        let moto = Moto::start_with_env(&[
            ("MOTO_ENABLE_RECORDING", "1".as_ref()),
            ("MOTO_RECORDER_FILEPATH", recording.as_os_str()),
        ]);
        Self {
            moto,
            recording,
            _dir: dir,
        }
    }

    fn moto_pid(&self) -> String {
        self.moto.pid().map(|p| p.to_string()).unwrap_or_default()
    }

    fn mark(&self) -> Mark {
        reset_peak_rss();
        Mark {
            access: file_len(self.moto.log_path()),
            recording: file_len(&self.recording),
            wall: Instant::now(),
            cpu: cpu_seconds("self"),
            moto_cpu: cpu_seconds(&self.moto_pid()),
        }
    }

    /// What happened since the mark: seconds, and the S3 requests by kind.
    fn since(
        &self,
        mark: &Mark,
        name: &'static str,
        function: Function,
        invocations: u64,
    ) -> StageRun {
        let wall = mark.wall.elapsed().as_secs_f64();
        let cpu = cpu_seconds("self") - mark.cpu;
        let moto_cpu = cpu_seconds(&self.moto_pid()) - mark.moto_cpu;
        let peak_rss_mb = peak_rss_mb();
        let mut requests = Requests::default();
        for line in read_from(self.moto.log_path(), mark.access).lines() {
            let Some((method, target, status)) = access_line(line) else {
                continue;
            };
            if let Some(kind) = s3_kind(&method, &target) {
                *requests.by_kind.entry(kind).or_default() += 1;
                if !(200..300).contains(&status) {
                    *requests.refused.entry(status).or_default() += 1;
                }
            }
        }
        let mut recorded_s3 = 0u64;
        for line in read_from(&self.recording, mark.recording).lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let method = entry["method"].as_str().unwrap_or_default();
            let url = entry["url"].as_str().unwrap_or_default();
            let target = url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or(url);
            let header = |name: &str| {
                entry["headers"].as_object().and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .and_then(|(_, v)| v.as_str())
                })
            };
            if s3_kind(method, target).is_some() {
                recorded_s3 += 1;
                if method == "PUT"
                    && (header("If-None-Match").is_some() || header("If-Match").is_some())
                {
                    requests.conditional += 1;
                }
                if method == "PUT" && header("x-amz-copy-source").is_some() {
                    requests.copies += 1;
                }
            } else if let Some(target) = header("X-Amz-Target") {
                *requests.other.entry(target.to_string()).or_default() += 1;
            } else if target.starts_with("/moto-api") {
            } else {
                *requests
                    .other
                    .entry(format!("{method} {target}"))
                    .or_default() += 1;
            }
        }
        if recorded_s3 != requests.total() {
            println!(
                "  {name}: the recorder holds {recorded_s3} S3 requests, the access log {} \
                 (kinds are from the access log; conditional writes from the recorder)",
                requests.total()
            );
        }
        StageRun {
            name,
            function,
            invocations,
            wall,
            cpu,
            moto_cpu,
            peak_rss_mb,
            requests,
        }
    }
}

/// Method, request target and status of one werkzeug access line
/// (`127.0.0.1 - - [date] "PUT /b/k HTTP/1.1" 200 -`, colours stripped).
fn access_line(line: &str) -> Option<(String, String, u16)> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI colour: ESC [ digits ; ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let (_, request) = plain.split_once("] \"")?;
    let (request, after) = request.split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    let status = after.split_whitespace().next()?.parse().ok()?;
    Some((method, target, status))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.read_to_end(&mut bytes).expect("read log");
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// User + system CPU seconds of a process (`self` or a PID), from
/// /proc/PID/stat (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3, utime 14, stime 15.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

/// Resets this process's peak RSS (VmHWM), so each stage's is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// What one run of a day left and took.
struct DayRun {
    mails: u64,
    stages: Vec<StageRun>,
    storage: BTreeMap<String, Storage>,
}

#[derive(Clone, Default, serde::Deserialize)]
struct Storage {
    current: u64,
    current_bytes: u64,
    noncurrent: u64,
    noncurrent_bytes: u64,
}

/// A fresh moto, bucket and firm; the day's export dropped; every stage
/// invoked with the events the previous one's writes produced.
async fn run_day(shape: &Shape, batch: usize) -> DayRun {
    let meter = Meter::start();
    let firm = Firm::new(
        &[synth::participant_email(0).as_str()],
        SignaturePolicy::Required,
    );
    let mut xml = Vec::new();
    synth::write_export(&mut xml, shape, "2026-11-20", 1).expect("export");
    firm.drop_export("ACME_2026-11-20.xml.pgp", &xml, true);
    drop(xml);
    let kms_key = chain::set_up(&meter.moto, &firm);
    let lambda = chain::lambda(meter.moto.sdk_options(), &firm, &kms_key).await;
    let invoke = |function: Function, event: Value| {
        let lambda = &lambda;
        let meter = &meter;
        async move {
            match lambda.handle(function, event).await {
                Ok(response) => response,
                Err(e) => panic!(
                    "{function:?} failed: {e}\nmoto log (tail):\n{}",
                    tail(&meter.moto.log())
                ),
            }
        }
    };
    let mut stages = Vec::new();

    let mark = meter.mark();
    invoke(Function::Fetch, chain::schedule_event()).await;
    stages.push(meter.since(&mark, "fetch", Function::Fetch, 1));

    for (name, queue, function) in [
        ("decrypt", RAW_EVENTS, Function::Decrypt),
        ("convert", PLAIN_EVENTS, Function::Convert),
    ] {
        let events = take_events(&meter.moto, queue);
        let mark = meter.mark();
        for event in &events {
            invoke(function, event.clone()).await;
        }
        stages.push(meter.since(&mark, name, function, events.len() as u64));
    }

    let records = take_queued(&meter.moto, MAIL_EVENTS);
    let mails = records.len() as u64;
    let batches = sqs_batches(&records, batch);
    let mark = meter.mark();
    let mut imported = 0;
    for event in &batches {
        let response: Response = invoke(Function::Import, event.clone()).await;
        assert_eq!(response.failed, 0, "every mail reaches its mailbox");
        imported += response.imported.len() as u64;
    }
    stages.push(meter.since(&mark, "import", Function::Import, batches.len() as u64));
    assert_eq!(imported, mails, "every queued mail imported once");

    // The status schedule: the first rebuild after the day's mails, then
    // one with nothing left to fold (the other runs of a day, every 30 min).
    for name in ["status rebuild", "status rebuild, idle"] {
        let mark = meter.mark();
        invoke(Function::Import, chain::rebuild_status_event()).await;
        stages.push(meter.since(&mark, name, Function::Import, 1));
    }

    let storage = meter.moto.boto(
        r#"
rows = {}
for page in s3.get_paginator("list_object_versions").paginate(Bucket=arg):
    for v in page.get("Versions", []):
        r = rows.setdefault(v["Key"].split("/")[0], {"current": 0, "current_bytes": 0, "noncurrent": 0, "noncurrent_bytes": 0})
        which = "current" if v["IsLatest"] else "noncurrent"
        r[which] += 1
        r[which + "_bytes"] += v["Size"]
out(rows)
"#,
        json!(BUCKET),
    );
    let storage = serde_json::from_value(storage).expect("storage rows");
    DayRun {
        mails,
        stages,
        storage,
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The runs of one shape: the requests and storage of the first (the
/// others must match), the median seconds of all.
struct Day {
    name: &'static str,
    messages: u64,
    mails: u64,
    stages: Vec<StageRun>,
    storage: BTreeMap<String, Storage>,
    runs: usize,
    same_requests: bool,
    /// The same shape with half the conversations, run once.
    half_messages: u64,
    half: DayRun,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

impl Day {
    fn of(
        name: &'static str,
        messages: u64,
        runs: Vec<DayRun>,
        half_messages: u64,
        half: DayRun,
    ) -> Self {
        let first = &runs[0];
        let same_requests = runs.iter().all(|r| {
            r.mails == first.mails
                && r.stages
                    .iter()
                    .zip(&first.stages)
                    .all(|(a, b)| a.requests == b.requests)
        });
        let stages = first
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let of = |f: fn(&StageRun) -> f64| {
                    median(runs.iter().map(|r| f(&r.stages[i])).collect())
                };
                StageRun {
                    wall: of(|s| s.wall),
                    cpu: of(|s| s.cpu),
                    moto_cpu: of(|s| s.moto_cpu),
                    peak_rss_mb: of(|s| s.peak_rss_mb),
                    ..stage.clone()
                }
            })
            .collect();
        Self {
            name,
            messages,
            mails: first.mails,
            stages,
            storage: first.storage.clone(),
            runs: runs.len(),
            same_requests,
            half_messages,
            half,
        }
    }

    /// A count at a million messages, from the full and the half day: the
    /// straight line through both (a fixed part and a part per message).
    fn fit(&self, full: f64, half: f64) -> f64 {
        let (n2, n1) = (self.messages as f64, self.half_messages as f64);
        if n2 == n1 {
            return full * 1e6 / n2;
        }
        let slope = (full - half) / (n2 - n1);
        let fixed = half - slope * n1;
        (fixed + slope * 1e6).max(0.0)
    }

    /// Requests of one kind class (or all, `None`) of stage `i` at a
    /// million messages.
    fn requests(&self, i: usize, class: Option<&str>) -> f64 {
        let count = |r: &Requests| match class {
            Some("conditional") => r.conditional as f64,
            Some(class) => r.of(class) as f64,
            None => r.total() as f64,
        };
        self.fit(
            count(&self.stages[i].requests),
            count(&self.half.stages[i].requests),
        )
    }

    fn requests_cost(&self, i: usize) -> f64 {
        let (full, half) = (&self.stages[i].requests, &self.half.stages[i].requests);
        full.by_kind
            .keys()
            .chain(half.by_kind.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|kind| {
                let n = |r: &Requests| r.by_kind.get(kind).copied().unwrap_or(0) as f64;
                self.fit(n(full), n(half)) * price(kind)
            })
            .sum()
    }

    fn mails_per_million(&self) -> f64 {
        self.fit(self.mails as f64, self.half.mails as f64)
    }

    fn bytes_per_million(&self, prefix: &str) -> f64 {
        let bytes = |s: &BTreeMap<String, Storage>| {
            s.get(prefix)
                .map(|s| (s.current_bytes + s.noncurrent_bytes) as f64)
                .unwrap_or(0.0)
        };
        self.fit(bytes(&self.storage), bytes(&self.half.storage))
    }

    fn print_measured(&self) {
        println!();
        println!(
            "## {}: {} messages in {} mails (median of {} runs; requests {} in every run)",
            self.name,
            self.messages,
            self.mails,
            self.runs,
            if self.same_requests {
                "the same"
            } else {
                "NOT the same"
            }
        );
        println!();
        println!("| stage | invocations | wall s | CPU s (functions) | CPU s (moto) | peak RSS MB | S3 requests | PUT | of which conditional | GET | HEAD | LIST | DELETE | POST | not 2xx | other services |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for s in &self.stages {
            let r = &s.requests;
            let refused: Vec<String> = r
                .refused
                .iter()
                .map(|(k, v)| format!("{v} x {k}"))
                .collect();
            let other: Vec<String> = r.other.iter().map(|(k, v)| format!("{v} x {k}")).collect();
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.name,
                s.invocations,
                s.wall,
                s.cpu,
                s.moto_cpu,
                s.peak_rss_mb,
                r.total(),
                r.of("PUT"),
                r.conditional,
                r.of("GET"),
                r.of("HEAD"),
                r.of("LIST"),
                r.of("DELETE"),
                r.of("POST"),
                refused.join(", "),
                other.join(", "),
            );
        }
        let kinds: BTreeMap<&str, u64> = self.stages.iter().fold(BTreeMap::new(), |mut acc, s| {
            for (k, v) in &s.requests.by_kind {
                *acc.entry(*k).or_default() += v;
            }
            acc
        });
        println!();
        println!(
            "S3 requests by kind, whole day: {}; copies: {}",
            kinds
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.stages.iter().map(|s| s.requests.copies).sum::<u64>()
        );
        println!();
        println!("| prefix | objects | versions not current | bytes (all versions) | bytes per message |");
        println!("|---|---|---|---|---|");
        for (prefix, s) in &self.storage {
            let bytes = s.current_bytes + s.noncurrent_bytes;
            println!(
                "| {prefix}/ | {} | {} ({} bytes) | {bytes} | {:.1} |",
                s.current,
                s.noncurrent,
                s.noncurrent_bytes,
                bytes as f64 / self.messages as f64
            );
        }
    }

    /// Lambda invocations per day of a million messages, per stage.
    fn invocations_per_million(&self, stage: &StageRun, batch: usize) -> f64 {
        match stage.name {
            // One daily fetch, one file: the same at any volume.
            "fetch" | "decrypt" | "convert" => stage.invocations as f64,
            "import" => (self.mails_per_million() / batch as f64).ceil(),
            // The schedule's 48 runs a day; one of them folds the day.
            "status rebuild" => 1.0,
            _ => 47.0,
        }
    }
}

/// Estimated billed seconds at `memory_mb`: the measured wall time, or the
/// function's CPU time at its share of a vCPU if that is longer.
fn billed_seconds(stage: &StageRun, memory_mb: u64) -> f64 {
    let share = (memory_mb as f64 / FULL_VCPU_MB).min(1.0);
    stage.wall.max(stage.cpu / share)
}

fn print_per_million(days: &[Day], template: &Template) {
    println!();
    println!("## Per million messages (requests and storage counted; GB-seconds estimated)");
    for day in days {
        let scale = 1e6 / day.messages as f64;
        println!();
        println!(
            "### {}: {:.0} mails per million messages",
            day.name,
            day.mails_per_million()
        );
        println!();
        println!("| stage | memory MB | invocations | S3 requests | PUT+POST (conditional) | GET | HEAD | LIST | DELETE | S3 requests $ | est. seconds | est. GB-s | Lambda $ |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let (mut total_s3, mut total_lambda, mut total_gbs, mut total_requests) =
            (0.0, 0.0, 0.0, 0.0);
        for (i, stage) in day.stages.iter().enumerate() {
            let memory = template.memory(stage.function);
            let invocations = day.invocations_per_million(stage, template.batch_size);
            // The idle rebuild is counted per invocation (each at a million
            // messages on record), the others once a day.
            let (per, seconds_per) = if stage.name == "status rebuild, idle" {
                (invocations, invocations * scale)
            } else {
                (1.0, scale)
            };
            let n = |class: Option<&str>| day.requests(i, class) * per;
            let s3 = day.requests_cost(i) * per;
            let seconds = billed_seconds(stage, memory) * seconds_per;
            let gbs = seconds * memory as f64 / 1024.0;
            let lambda = gbs * LAMBDA_GB_SECOND + invocations * LAMBDA_REQUEST;
            total_s3 += s3;
            total_lambda += lambda;
            total_gbs += gbs;
            total_requests += n(None);
            println!(
                "| {} | {memory} | {invocations:.0} | {:.0} | {:.0} ({:.0}) | {:.0} | {:.0} | {:.0} | {:.0} | {s3:.2} | {seconds:.0} | {gbs:.0} | {lambda:.2} |",
                stage.name,
                n(None),
                n(Some("PUT")) + n(Some("POST")),
                n(Some("conditional")),
                n(Some("GET")),
                n(Some("HEAD")),
                n(Some("LIST")),
                n(Some("DELETE")),
            );
        }
        println!(
            "| whole day | | | {total_requests:.0} | | | | | | {total_s3:.2} | | {total_gbs:.0} | {total_lambda:.2} |"
        );
        println!();
        println!(
            "| prefix | GB per million messages (all versions) | $ per month kept (Standard) |"
        );
        println!("|---|---|---|");
        let mut total_gb = 0.0;
        for prefix in PREFIXES {
            let gb = day.bytes_per_million(prefix) / GB;
            total_gb += gb;
            println!("| {prefix}/ | {gb:.3} | {:.4} |", gb * STANDARD_GB_MONTH);
        }
        let raw_gb = day.bytes_per_million("raw") / GB;
        println!(
            "| all | {total_gb:.3} | {:.4} (raw/ in Glacier IR after its transition: {:.4}) |",
            total_gb * STANDARD_GB_MONTH,
            (total_gb - raw_gb) * STANDARD_GB_MONTH + raw_gb * GLACIER_IR_GB_MONTH
        );
    }
}
