//! `bench_lambda`: size of each Lambda `bootstrap` and its init time, from
//! process start to its first `GET /runtime/invocation/next`, measured
//! against a stand-in of the Lambda runtime API on loopback (not a test).
//!
//! ```text
//! cargo lambda build --release
//! cargo run --release --no-default-features -p integration-tests --bin bench_lambda -- [--starts 30] [DIR]
//! ```
//!
//! `DIR` defaults to `target/lambda` (one `FUNCTION/bootstrap` per function).
//! The stand-in answers nothing: the figure is the function's own init
//! (environment, settings, SDK clients), which is what a cold start adds to
//! the first event beyond Lambda's own sandbox start. The runtime API of
//! `cargo lambda watch` would add its own request handling to each figure.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NEXT_INVOCATION: &str = "/runtime/invocation/next";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let starts = args
        .iter()
        .position(|a| a == "--starts")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(30usize);
    let dir = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--starts"))
        .map(|(_, a)| PathBuf::from(a))
        .next()
        .unwrap_or_else(|| PathBuf::from("target/lambda"));
    let mut functions: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run `cargo lambda build --release`)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bootstrap"))
        .filter(|p| p.is_file())
        .collect();
    functions.sort();
    assert!(!functions.is_empty(), "no */bootstrap in {}", dir.display());

    println!("| function | bootstrap size | init, median of {starts} | init, max | bar |");
    println!("|---|---:|---:|---:|---|");
    for bootstrap in &functions {
        let name = bootstrap
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size_mb = std::fs::metadata(bootstrap)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(f64::NAN);
        let mut times: Vec<f64> = (0..starts).map(|_| init_ms(bootstrap)).collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        println!("| {name} | {size_mb:.1} MB | {median:.1} ms | {max:.1} ms | init < 50 ms |");
    }
}

/// Milliseconds from spawning `bootstrap` to its first request for an event.
fn init_ms(bootstrap: &Path) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback port");
    let address = listener.local_addr().expect("address");
    let data = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut child = Command::new(bootstrap)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("BUCKET", "bench-bucket")
        .env("SECRET_ID", "chat-archive/ice")
        .env("FIRM_DOMAINS", "acme.example")
        .env("DROP_DIR", data.path())
        .env("MAILDIR_ROOT", data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bootstrap.display()));
    // Polled, so that a function that fails its init (and exits) ends the
    // wait instead of leaving it blocked in accept.
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let elapsed = loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                let mut line = String::new();
                BufReader::new(stream)
                    .read_line(&mut line)
                    .expect("request line");
                if line.contains(NEXT_INVOCATION) {
                    break started.elapsed();
                }
                assert!(
                    !line.contains("/init/error"),
                    "{}: init failed",
                    bootstrap.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{}: exited at init ({status})", bootstrap.display());
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{}: no request for an event",
                    bootstrap.display()
                );
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    child.kill().ok();
    child.wait().ok();
    elapsed.as_secs_f64() * 1e3
}
