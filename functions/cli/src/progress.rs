//! A progress bar over the files of a run, counting mails as they land; on
//! anything but a terminal (cron, CI, a log file) plain lines instead.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_archive_core::pipeline::Progress;
use chat_archive_core::status::ItemRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bar {
    bar: ProgressBar,
    mails: AtomicU64,
    /// Not a terminal: one line per file instead of a bar.
    plain: bool,
    done: AtomicU64,
}

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            bar,
            mails: AtomicU64::new(0),
            plain: !std::io::stderr().is_terminal(),
            done: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn fetched(&self, files: usize) {
        match self.plain {
            true => eprintln!("fetched {files} new file(s)"),
            false => self.bar.println(format!("fetched {files} new file(s)")),
        }
    }

    fn files_to_process(&self, files: usize) {
        self.bar.set_length(files as u64);
    }

    fn file_started(&self, key: &str) {
        self.bar.set_message(key.to_string());
    }

    fn file_done(&self, key: &str) {
        self.bar.inc(1);
        if self.plain {
            let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
            let total = self.bar.length().unwrap_or(0);
            let mails = self.mails.load(Ordering::Relaxed);
            eprintln!("[{done}/{total}] {key} done ({mails} mail(s) imported so far)");
        }
    }

    fn mail_imported(&self, _record: &ItemRecord) {
        let mails = self.mails.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.set_message(format!("{mails} mails imported"));
        self.bar.tick();
    }
}
