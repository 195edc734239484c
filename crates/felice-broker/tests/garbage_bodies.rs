//! Garbage after a valid request header, for every handled API and version:
//! the broker answers or refuses the frame, and never panics or aborts (the
//! class of bug where a claimed array count reserved gigabytes).
//! Deterministic: a fixed-seed xorshift generator, so a failure replays.

use bytes::{BufMut, Bytes, BytesMut};
use felice_broker::handlers::HANDLED;
use felice_broker::{dispatch, server, BrokerConfig};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn frame(api: ApiKey, version: i16, body: &[u8]) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("garbage")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    buf.put_slice(body);
    buf.freeze()
}

#[tokio::test]
async fn random_bodies_never_panic_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = server::start(BrokerConfig::for_test(dir.path()))
        .await
        .expect("start");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut answered = 0usize;
    let mut refused = 0usize;
    for (api, range) in HANDLED {
        // CreateTopics/DeleteTopics bodies that happen to decode would do real
        // (possibly large) work; their decoding is the same generated code.
        if matches!(api, ApiKey::CreateTopics | ApiKey::DeleteTopics) {
            continue;
        }
        for version in range.min..=range.max {
            for case in 0..60 {
                let len = (rng.next() % 64) as usize;
                let mut body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // Every few cases: a huge array/bytes length right at the start.
                if case % 4 == 0 && body.len() >= 4 {
                    body[..4].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
                }
                match dispatch::handle_frame(&b.broker, frame(*api, version, &body), None).await {
                    Ok(_) => answered += 1,
                    Err(_) => refused += 1,
                }
            }
        }
    }
    assert!(refused > 0, "no garbage body was refused");
    assert!(answered + refused > 1000);
    b.stop().await;
}
