//! Blind-tunnel byte relay with an idle limit: the tunnel closes once no byte has moved in either
//! direction for `PROXY_READ_TIMEOUT`. Its total lifetime is not limited.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Per-direction buffer.
const BUF: usize = 16 * 1024;

/// How a relay ended, and the bytes it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Relayed {
    /// Client → target.
    pub(super) sent: u64,
    /// Target → client.
    pub(super) received: u64,
    /// True if it ended because nothing moved for the idle limit.
    pub(super) idle: bool,
}

/// Copies bytes both ways until both sides have finished sending (a half-close is passed on), an
/// error, or `idle` without traffic. A write that makes no progress for `idle` counts as idle too.
pub(super) async fn relay<C, T>(client: &mut C, target: &mut T, idle: Duration) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = vec![0u8; BUF];
    let mut down = vec![0u8; BUF];
    let mut done = Relayed {
        sent: 0,
        received: 0,
        idle: false,
    };
    let (mut client_open, mut target_open) = (true, true);
    while client_open || target_open {
        tokio::select! {
            read = client.read(&mut up), if client_open => match read {
                Ok(0) => {
                    client_open = false;
                    let _ = tokio::time::timeout(idle, target.shutdown()).await;
                }
                Ok(n) => match tokio::time::timeout(idle, target.write_all(&up[..n])).await {
                    Ok(Ok(())) => done.sent += n as u64,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        done.idle = true;
                        break;
                    }
                },
                Err(_) => break,
            },
            read = target.read(&mut down), if target_open => match read {
                Ok(0) => {
                    target_open = false;
                    let _ = tokio::time::timeout(idle, client.shutdown()).await;
                }
                Ok(n) => match tokio::time::timeout(idle, client.write_all(&down[..n])).await {
                    Ok(Ok(())) => done.received += n as u64,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        done.idle = true;
                        break;
                    }
                },
                Err(_) => break,
            },
            () = tokio::time::sleep(idle) => {
                done.idle = true;
                break;
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paused time: the idle limit is reached by auto-advance, not by waiting.
    #[tokio::test(start_paused = true)]
    async fn idle_tunnels_close_and_busy_ones_do_not() {
        let (mut client, mut client_end) = tokio::io::duplex(1024);
        let (mut target, mut target_end) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(30);
        let task = tokio::spawn(async move { relay(&mut client_end, &mut target_end, idle).await });
        // Traffic every 20 s (less than the idle limit) keeps it open well past 30 s.
        for i in 0..5u8 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            client.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            target.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
            target.write_all(b"ab").await.unwrap();
            let mut b = [0u8; 2];
            client.read_exact(&mut b).await.unwrap();
        }
        // Then silence: it ends as idle and both sides see the close.
        let relayed = task.await.unwrap();
        assert_eq!(
            relayed,
            Relayed {
                sent: 5,
                received: 10,
                idle: true
            }
        );
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        target.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn half_close_is_passed_on() {
        let (mut client, mut client_end) = tokio::io::duplex(1024);
        let (mut target, mut target_end) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            relay(&mut client_end, &mut target_end, Duration::from_secs(3600)).await
        });
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        target.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The other direction still works after the client finished sending.
        target.write_all(b"response").await.unwrap();
        target.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response");
        let relayed = task.await.unwrap();
        assert_eq!(
            relayed,
            Relayed {
                sent: 7,
                received: 8,
                idle: false
            }
        );
    }
}
