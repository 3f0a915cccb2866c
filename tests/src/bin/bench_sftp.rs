//! `bench_sftp`: SFTP fetch throughput next to OpenSSH's own `sftp` client,
//! fetching the same file from the same local sshd in the same run.
//!
//! ```text
//! scripts/bench-sftp.sh [--size-mb 500] [--runs 3]
//! # = cargo run --release --no-default-features -p integration-tests --bin bench_sftp -- ...  (as root: it starts sshd)
//! ```
//!
//! Three measurements per run, interleaved so that machine noise hits all:
//! - `stage`: the fetch stage into the local object store (SHA-256 twice,
//!   fsync, atomic commit) - what the daily run does;
//! - `stream`: the SFTP source alone, streamed into a counting sink;
//! - `openssh`: `sftp -b` `get` of the same file to a local file, with its
//!   default cipher (chacha20-poly1305), and `openssh-gcm` with ours
//!   (aes256-gcm@openssh.com).
//!
//! Reports MB/s per run, medians, and the ratios to the faster OpenSSH.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chat_archive_core::adapters::{LocalStore, SecretsFile, SftpConfig, SftpSource};
use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::{SecretStore, SecretValue, Source};
use chat_archive_core::stages::{fetch, Context};
use integration_tests::sshd::{Sshd, KEY_USER};
use tokio::io::AsyncReadExt;

const MB: f64 = 1024.0 * 1024.0;

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Incompressible bytes, fast to make.
fn write_payload(path: &std::path::Path, bytes: u64) {
    use std::io::Write;
    let mut out =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("payload"));
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n]).expect("payload");
        left -= n as u64;
    }
    out.flush().expect("payload");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MB / elapsed.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_mb = flag(&args, "--size-mb", 500);
    let runs = flag(&args, "--runs", 3).max(1);
    let in_flight = flag(&args, "--reads-in-flight", 32) as usize;
    let bytes = size_mb * 1024 * 1024;

    let server = Sshd::start();
    let name = "ACME_bench.xml.pgp";
    let remote = server.export_dir.join(name);
    eprintln!("writing a {size_mb} MiB file on the site ...");
    write_payload(&remote, bytes);
    server.set_mtime(&remote, SystemTime::now() - Duration::from_secs(3600));

    let work = tempfile::Builder::new()
        .prefix("bench-sftp")
        .tempdir()
        .expect("temp dir");
    let secrets = Arc::new(SecretsFile::new(work.path().join("secrets.json")));
    secrets
        .update(
            "ice",
            [
                (fields::FIRM_CODE.to_string(), SecretValue::new(KEY_USER)),
                (
                    fields::SSH_PRIVATE_KEY.to_string(),
                    SecretValue::new(server.client_key()),
                ),
            ]
            .into(),
        )
        .await
        .expect("secrets");
    let config = SftpConfig {
        host: "127.0.0.1".into(),
        port: server.port,
        directory: server.export_dir.display().to_string(),
        host_keys: vec![server.host_key()],
        settle_secs: 0,
        reads_in_flight: in_flight,
        ..Default::default()
    };
    let mut connector = ConnectorConfig::ice();
    connector.sftp = Some(config.clone());

    let known_hosts = server.known_hosts();
    let batch = work.path().join("batch");
    let local_copy = work.path().join("openssh-copy");
    std::fs::write(
        &batch,
        format!("get {} {}\n", remote.display(), local_copy.display()),
    )
    .expect("batch");

    let (mut stage, mut stream) = (Vec::new(), Vec::new());
    let (mut openssh, mut openssh_gcm) = (Vec::new(), Vec::new());
    println!("   run  stage MB/s  stream MB/s  openssh MB/s  openssh-gcm MB/s");
    for run in 1..=runs {
        // The fetch stage into a fresh local store.
        let store_dir = work.path().join(format!("store-{run}"));
        let ctx = Context::single(Arc::new(LocalStore::new(&store_dir)), connector.clone());
        let source = SftpSource::new(config.clone(), "ice", secrets.clone());
        let started = Instant::now();
        let outcome = fetch::run(&ctx, &source, &FetchRequest::default())
            .await
            .expect("fetch stage");
        let elapsed = started.elapsed();
        assert_eq!(outcome.fetched.len(), 1);
        stage.push(mbps(bytes, elapsed));
        source.disconnect().await;
        let _ = std::fs::remove_dir_all(&store_dir);

        // The source alone, into a sink that only counts (no hash, no disk).
        let source = SftpSource::new(config.clone(), "ice", secrets.clone());
        let started = Instant::now();
        let listed = source.list().await.expect("list");
        let file = listed.iter().find(|f| f.name == name).expect("listed");
        let mut body = source.open(file).await.expect("open");
        let mut buf = vec![0u8; 256 * 1024];
        let mut seen = 0u64;
        loop {
            let n = body.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            seen += n as u64;
        }
        assert_eq!(seen, bytes);
        stream.push(mbps(bytes, started.elapsed()));
        drop(body);
        source.disconnect().await;

        // OpenSSH's sftp client, same file, same server: with its default
        // cipher (chacha20-poly1305) and with ours (aes256-gcm).
        for (cipher, results) in [
            (None, &mut openssh),
            (Some("aes256-gcm@openssh.com"), &mut openssh_gcm),
        ] {
            let mut command = Command::new("sftp");
            command
                .args(["-q", "-P", &server.port.to_string(), "-i"])
                .arg(server.client_key_path())
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                ])
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()));
            if let Some(cipher) = cipher {
                command.args(["-c", cipher]);
            }
            let started = Instant::now();
            let status = command
                .arg("-b")
                .arg(&batch)
                .arg(format!("{KEY_USER}@127.0.0.1"))
                .stdout(Stdio::null())
                .status()
                .expect("sftp runs");
            let elapsed = started.elapsed();
            assert!(status.success(), "OpenSSH sftp failed");
            assert_eq!(std::fs::metadata(&local_copy).expect("copy").len(), bytes);
            results.push(mbps(bytes, elapsed));
            let _ = std::fs::remove_file(&local_copy);
        }

        println!(
            "{run:>6}  {:>10.1}  {:>11.1}  {:>12.1}  {:>16.1}",
            stage[stage.len() - 1],
            stream[stream.len() - 1],
            openssh[openssh.len() - 1],
            openssh_gcm[openssh_gcm.len() - 1]
        );
    }
    let (stage, stream) = (median(&mut stage), median(&mut stream));
    let (openssh, openssh_gcm) = (median(&mut openssh), median(&mut openssh_gcm));
    println!("median  {stage:>10.1}  {stream:>11.1}  {openssh:>12.1}  {openssh_gcm:>16.1}");
    let best = openssh.max(openssh_gcm);
    println!(
        "ratio to the faster OpenSSH: stage {:.2}x, stream {:.2}x (bar: >= 0.70x); \
         {size_mb} MiB, {runs} run(s), {in_flight} reads in flight",
        stage / best,
        stream / best
    );
}
