//! `felice bench --loopback`: this machine's one-stream TCP bandwidth over 127.0.0.1,
//! the ceiling a broker's single-connection throughput can be held against.
//!
//! A sender thread writes one reused buffer (`--buffer-bytes`, default 1 MiB) in a
//! loop for `--duration` seconds; a receiver thread reads into a buffer of the same
//! size and discards the bytes. Both are plain blocking `std::net` sockets (no async
//! runtime in the path). The rate is bytes received over the time from the first to
//! the last byte received; 1 GB = 10^9 bytes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;

/// What one loopback run measured.
pub struct LoopbackResult {
    pub bytes: u64,
    pub secs: f64,
}

impl LoopbackResult {
    pub fn gb_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / 1e9 / self.secs
        } else {
            0.0
        }
    }
}

pub fn measure(duration: Duration, buffer_bytes: usize) -> anyhow::Result<LoopbackResult> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr().context("listener address")?;
    let receiver = std::thread::spawn(
        move || -> anyhow::Result<(u64, Option<Instant>, Option<Instant>)> {
            let (mut stream, _) = listener.accept().context("accepting the loopback stream")?;
            let mut buf = vec![0u8; buffer_bytes];
            let (mut bytes, mut first, mut last) = (0u64, None, None);
            loop {
                let n = stream.read(&mut buf).context("loopback receive")?;
                if n == 0 {
                    return Ok((bytes, first, last));
                }
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                bytes += n as u64;
            }
        },
    );
    let mut stream = TcpStream::connect(addr).context("connecting the loopback stream")?;
    // Pages touched once, so the first writes do not count page faults.
    let buf: Vec<u8> = (0..buffer_bytes).map(|i| (i % 251) as u8).collect();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        stream.write_all(&buf).context("loopback send")?;
    }
    stream
        .shutdown(Shutdown::Write)
        .context("closing the loopback stream")?;
    let (bytes, first, last) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("loopback receiver thread panicked"))??;
    let secs = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(LoopbackResult { bytes, secs })
}

pub fn run(duration: Duration, buffer_bytes: usize) -> anyhow::Result<()> {
    let r = measure(duration, buffer_bytes)?;
    println!(
        "loopback one-stream GB/s={:.3} ({} bytes in {:.3} s, {buffer_bytes}-byte buffers, \
         1 GB = 10^9 bytes)",
        r.gb_per_s(),
        r.bytes,
        r.secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_bytes() -> anyhow::Result<()> {
        let r = measure(Duration::from_millis(50), 64 * 1024)?;
        assert!(r.bytes > 0);
        assert!(r.gb_per_s() > 0.0);
        Ok(())
    }
}
