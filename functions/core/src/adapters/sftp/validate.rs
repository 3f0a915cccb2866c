//! `validate-connection`: every step checked, a verdict each.

use super::*;

// Validate connection

/// One line of the validation report.
#[derive(Debug, Clone)]
pub struct CheckStep {
    pub step: Step,
    /// What was found (Ok) or what went wrong (Err). Never a secret.
    pub result: std::result::Result<String, String>,
}

/// The report of [`validate_connection`]: every step tried, in order.
#[derive(Debug, Clone)]
pub struct ConnectionCheck {
    pub site: String,
    pub steps: Vec<CheckStep>,
    /// The host key the server presented, when the handshake got that far.
    pub server_key: Option<ServerKey>,
    /// The export directory's files, when the listing succeeded.
    pub files: Vec<RemoteFile>,
}

impl ConnectionCheck {
    pub fn passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.result.is_ok())
    }

    /// The step that failed, if any.
    pub fn failed_step(&self) -> Option<&CheckStep> {
        self.steps.iter().find(|s| s.result.is_err())
    }

    fn ok(&mut self, step: Step, detail: impl Into<String>) {
        self.steps.push(CheckStep {
            step,
            result: Ok(detail.into()),
        });
    }

    fn failed(&mut self, step: Step, error: &Error) {
        self.steps.push(CheckStep {
            step,
            result: Err(error.to_string()),
        });
    }
}

impl fmt::Display for ConnectionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "SFTP site: {}", self.site)?;
        for step in &self.steps {
            let (mark, text) = match &step.result {
                Ok(detail) => ("ok    ", detail),
                Err(problem) => ("FAILED", problem),
            };
            writeln!(f, "  [{mark}] {:<9} {text}", step.step.label())?;
        }
        match self.failed_step() {
            None if self.passed() => {
                writeln!(f, "Verdict: OK - the connector can fetch from this site.")?
            }
            None => writeln!(f, "Verdict: FAILED")?,
            Some(step) => writeln!(f, "Verdict: FAILED at {}.", step.step.label())?,
        }
        let key_failed = self.failed_step().is_some_and(|s| s.step == Step::HostKey);
        if let (true, Some(key)) = (key_failed, &self.server_key) {
            writeln!(
                f,
                "The server's host key: {key}\n  {}\nPin it only after ICE has confirmed this fingerprint.",
                key.openssh
            )?;
        }
        Ok(())
    }
}

/// "Validate connection", the admin's first step: the fetch stage's own
/// connect path (host key check, login) followed by a listing of the export
/// directory. Never fails: every outcome is in the report.
pub async fn validate_connection(
    config: &SftpConfig,
    secrets: &dyn SecretStore,
    connector: &str,
) -> ConnectionCheck {
    let mut check = ConnectionCheck {
        site: config.describe(),
        steps: Vec::new(),
        server_key: None,
        files: Vec::new(),
    };
    let setup = match secrets
        .load(connector)
        .await
        .and_then(|secret| Setup::new(config, &secret))
    {
        Ok(setup) => setup,
        Err(e) => {
            check.failed(Step::Setup, &e);
            return check;
        }
    };
    check.ok(
        Step::Setup,
        format!(
            "{} pinned host key(s); login as {:?} with {}",
            setup.pins.len(),
            setup.login.user,
            match (&setup.login.key, &setup.login.password) {
                (Some(_), Some(_)) => "key and password",
                (Some(_), None) => "key",
                _ => "password",
            }
        ),
    );
    let connection = match setup.connect().await {
        Ok(connection) => connection,
        Err(Failure {
            step,
            error,
            server_key,
        }) => {
            // The steps before the failed one passed.
            if step != Step::Connect {
                check.ok(Step::Connect, "TCP connection and SSH handshake");
            }
            if matches!(step, Step::Login | Step::Sftp) {
                let key = server_key.as_ref().map(ToString::to_string);
                check.ok(
                    Step::HostKey,
                    format!("{} matches the pinned key", key.unwrap_or_default()),
                );
            }
            if step == Step::Sftp {
                check.ok(Step::Login, format!("as {:?}", setup.login.user));
            }
            check.failed(step, &error);
            check.server_key = server_key;
            return check;
        }
    };
    check.server_key = connection.server_key.clone();
    check.ok(Step::Connect, "TCP connection and SSH handshake");
    check.ok(
        Step::HostKey,
        format!(
            "{} matches the pinned key",
            connection
                .server_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
    );
    check.ok(
        Step::Login,
        format!("as {:?} ({})", setup.login.user, connection.method),
    );
    check.ok(Step::Sftp, "SFTP subsystem open");
    match list_directory(config, &connection).await {
        Ok(files) => {
            let newest = files.iter().max_by_key(|f| f.modified);
            let detail = match newest {
                Some(newest) => format!(
                    "{} file(s) in {}; newest {:?} ({} bytes, {})",
                    files.len(),
                    config.directory,
                    newest.name,
                    newest.size,
                    newest.modified.format("%Y-%m-%d %H:%M UTC")
                ),
                None => format!("the directory {} is empty", config.directory),
            };
            check.ok(Step::List, detail);
            check.files = files;
        }
        Err(e) => check.failed(Step::List, &e),
    }
    let _ = connection.sftp.close().await;
    let _ = connection
        .ssh
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    check
}
