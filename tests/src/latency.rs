//! A delay line in front of a loopback server: a TCP proxy that holds every
//! chunk for half the chosen round-trip time in each direction, without
//! limiting throughput. Loopback has no latency, so without it a benchmark
//! cannot show what pipelining saves on a real link (a mail server in another
//! data centre is 2 to 50 ms away).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running delay line; it stops with the runtime that started it.
pub struct DelayLine {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl DelayLine {
    /// Listens on a free loopback port and forwards each connection to
    /// `127.0.0.1:target`, adding `rtt` to every round trip.
    pub async fn start(target: u16, rtt: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let one_way = rtt / 2;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await {
                        forward_both_ways(client, server, one_way).await;
                    }
                });
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward_both_ways(client: TcpStream, server: TcpStream, one_way: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        delayed_copy(client_read, server_write, one_way),
        delayed_copy(server_read, client_write, one_way),
    );
}

/// Copies one direction: a reader stamps each chunk with its due time and a
/// writer sends it then, so many chunks can be in flight at once, as on a
/// long link.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buffer).await {
            if n == 0
                || chunks
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
        // Dropping the sender lets the writer finish what is in flight.
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
