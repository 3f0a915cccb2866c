//! A bounded pipe from blocking code (PGP, XML) to an async store write.
//!
//! The writer half is a `std::io::Write` used on a blocking thread; the reader
//! half is a [`ByteStream`] for `ObjectStore::put`. Unless the writer calls
//! [`PipeWriter::finish`], the stream ends with an error, so the store commits
//! nothing: data whose signature turns out bad never becomes an object.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;

use crate::ports::ByteStream;

/// Chunks in flight: with 64 KiB writes, at most ~0.5 MiB buffered.
const DEPTH: usize = 8;

pub struct PipeWriter {
    sender: Option<mpsc::Sender<std::io::Result<Bytes>>>,
}

pub fn pipe() -> (PipeWriter, ByteStream) {
    let (sender, receiver) = mpsc::channel(DEPTH);
    let reader = StreamReader::new(ReceiverStream::new(receiver));
    (
        PipeWriter {
            sender: Some(sender),
        },
        Box::pin(reader),
    )
}

/// What `write` writes on a blocking thread, as a store body read while it
/// is written: a few chunks in flight, never the whole. An error (or a
/// panic) ends the stream with an error, so the store commits nothing.
pub fn streamed(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
) -> ByteStream {
    use std::io::Write as _;
    let (writer, body) = pipe();
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, writer);
        if write(&mut out).and_then(|()| out.flush()).is_ok() {
            if let Ok(writer) = out.into_inner() {
                writer.finish();
            }
        }
        // Otherwise the writer is dropped unfinished: the stream fails.
    });
    body
}

impl PipeWriter {
    /// Ends the stream cleanly: the store may commit.
    pub fn finish(mut self) {
        self.sender = None;
    }

    fn abort(&mut self, reason: &str) {
        if let Some(sender) = self.sender.take() {
            let _ = sender.blocking_send(Err(std::io::Error::other(reason.to_string())));
        }
    }
}

impl std::io::Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| std::io::Error::other("pipe already closed"))?;
        sender
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "store write stopped")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.abort("producer stopped before the end of the data");
    }
}
