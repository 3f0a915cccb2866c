//! A real local S3 + Secrets Manager (+ SQS, KMS) server: PyPI `moto[server]`
//! started on a free loopback port and stopped by its PID. boto3 (installed
//! with moto) sets things up and looks at them, so what our adapters write is
//! checked by a client we did not write.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chat_archive_core::aws::SdkOptions;

use crate::process::{wait_for_port, ChildGuard};

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

/// The Python venv with moto, boto3, cfn-lint and cargo-lambda:
/// `CHAT_ARCHIVE_VENV`, else the repository's `.venv`
/// (`scripts/install-test-deps.sh` makes it).
pub fn venv() -> PathBuf {
    std::env::var_os("CHAT_ARCHIVE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub struct Moto {
    pub port: u16,
    server: ChildGuard,
    log: tempfile::NamedTempFile,
}

const BOTO_PRELUDE: &str = r#"
import json, os, sys
import boto3
from botocore.config import Config
kw = dict(endpoint_url=os.environ["MOTO_ENDPOINT"], region_name=os.environ["AWS_DEFAULT_REGION"],
          aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw)
sm = boto3.client("secretsmanager", **kw)
sqs = boto3.client("sqs", **kw)
kms = boto3.client("kms", **kw)
arg = json.loads(os.environ.get("BOTO_ARG", "null"))
def out(value):
    print(json.dumps(value, default=str))
"#;

impl Moto {
    /// Starts `moto_server` on a free loopback port (a few attempts, in case
    /// another process takes the port first).
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// [`Moto::start`] with more environment for the server (e.g. moto's
    /// request recorder, `MOTO_ENABLE_RECORDING` and `MOTO_RECORDER_FILEPATH`).
    pub fn start_with_env(env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let server_bin = venv().join("bin/moto_server");
        assert!(
            server_bin.is_file(),
            "{} missing: run scripts/install-test-deps.sh",
            server_bin.display()
        );
        for _ in 0..3 {
            let port = crate::free_port();
            let log = tempfile::Builder::new()
                .prefix("moto")
                .suffix(".log")
                .tempfile()
                .expect("moto log file");
            let child = Command::new(&server_bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("log"))
                .stderr(log.reopen().expect("log"))
                .spawn()
                .expect("moto_server starts");
            let mut server = ChildGuard::new(child);
            if wait_for_port(port) {
                return Self { port, server, log };
            }
            server.stop();
        }
        panic!("moto_server did not start on any port");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// What the server logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The file the server logs to (stdout and stderr: one access line per
    /// request, werkzeug's `"PUT /bucket/key HTTP/1.1" 200`).
    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// How our SDK clients reach this server.
    pub fn sdk_options(&self) -> SdkOptions {
        SdkOptions {
            endpoint_url: Some(self.endpoint()),
            region: Some(REGION.into()),
            static_credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            force_path_style: true,
            timeouts: Default::default(),
        }
    }

    /// Environment for a process that talks to this server (a function under
    /// `cargo lambda watch`, boto3).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }

    /// Runs a boto3 script (clients `s3`, `sm`, `sqs`, `kms`; the argument
    /// as `arg`; `out(value)` prints JSON) and returns the last JSON it
    /// printed (`null` if none).
    pub fn boto(&self, script: &str, arg: serde_json::Value) -> serde_json::Value {
        let output = Command::new(venv().join("bin/python"))
            .arg("-c")
            .arg(format!("{BOTO_PRELUDE}\n{script}"))
            .envs(self.env())
            .env("MOTO_ENDPOINT", self.endpoint())
            .env("BOTO_ARG", arg.to_string())
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "boto3 script failed: {}\n{script}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("boto3 script prints JSON"))
            .unwrap_or(serde_json::Value::Null)
    }

    /// Stops the server (by its PID), as dropping does.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}
