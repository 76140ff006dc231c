//! The lenient-authority rewriter on byte streams built by a client-side HPACK encoder: what
//! well-behaved clients and HTTP/1 send passes through byte for byte; a URL-shaped authority is
//! fixed in every header block of its connection, as a server-side decoder reads them, with
//! the other fields, the frames between and the stream flags unchanged; input split anywhere
//! gives the same output.

use super::*;

const AUTHORITY: &[u8] = b":authority";

/// A header list as decoded: (name, value) pairs.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_frame_header(&mut out, payload.len(), kind, flags, stream);
    out.put_slice(payload);
    out.to_vec()
}

fn request_fields(authority: &[u8], path: &str) -> Fields {
    vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), path.as_bytes().to_vec()),
        (AUTHORITY.to_vec(), authority.to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"te".to_vec(), b"trailers".to_vec()),
    ]
}

fn encode(encoder: &mut loona_hpack::Encoder<'static>, fields: &Fields) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// A client connection: preface, SETTINGS, then for each request a HEADERS frame and a DATA
/// frame with END_STREAM.
fn connection(authority: &[u8], requests: u32) -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    for i in 0..requests {
        let stream = 1 + 2 * i;
        let block = encode(
            &mut encoder,
            &request_fields(authority, "/etcdserverpb.Maintenance/Status"),
        );
        bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
        bytes.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    }
    bytes
}

/// Feeds `input` in pieces of `step` bytes; returns the output.
fn run(input: &[u8], step: usize) -> (Vec<u8>, Rewriter) {
    let mut rewriter = Rewriter::default();
    let mut pending = BytesMut::new();
    let mut out = BytesMut::new();
    for piece in input.chunks(step) {
        pending.put_slice(piece);
        rewriter.feed(&mut pending, &mut out).expect("feeds");
    }
    assert!(pending.is_empty(), "nothing held back at the end");
    (out.to_vec(), rewriter)
}

/// The frames after the preface: (kind, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE));
    bytes = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// The header blocks a server decodes from `bytes` (CONTINUATIONs joined), with their stream.
fn server_view(bytes: &[u8]) -> Vec<(u32, Fields)> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut blocks = Vec::new();
    let mut open: Option<(u32, Vec<u8>)> = None;
    for (kind, flags, stream, payload) in frames(bytes) {
        match kind {
            HEADERS => open = Some((stream, payload)),
            CONTINUATION => open.as_mut().expect("open block").1.extend(payload),
            _ => continue,
        }
        if flags & END_HEADERS != 0 {
            let (stream, block) = open.take().expect("block");
            blocks.push((
                stream,
                decoder.decode(&block).expect("the server decodes it"),
            ));
        }
    }
    blocks
}

#[test]
fn http1_and_well_behaved_http2_pass_through_unchanged() {
    let http1 = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n".to_vec();
    for step in [1, 3, 1000] {
        let (out, r) = run(&http1, step);
        assert_eq!(out, http1);
        assert!(r.passing_all());
    }
    let h2 = connection(b"127.0.0.1:2379", 3);
    for step in [1, 7, 9, 4096] {
        let (out, r) = run(&h2, step);
        assert_eq!(out, h2, "step {step}");
        assert!(r.passing_all() && !r.rewriting());
    }
    let no_authority = {
        let mut encoder = loona_hpack::Encoder::new();
        let mut fields = request_fields(b"", "/x");
        fields.retain(|(n, _)| n != AUTHORITY);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &encode(&mut encoder, &fields),
        ));
        bytes
    };
    assert_eq!(run(&no_authority, 5).0, no_authority);
}

#[test]
fn a_url_as_authority_is_fixed_in_every_block_of_the_connection() {
    let input = connection(b"http://127.0.0.1:2379", 3);
    let want: Vec<_> = (0..3)
        .map(|i| {
            (
                1 + 2 * i,
                request_fields(b"127.0.0.1:2379", "/etcdserverpb.Maintenance/Status"),
            )
        })
        .collect();
    let mut outputs = Vec::new();
    for step in [1, 2, 9, 10, 100, 1 << 20] {
        let (out, r) = run(&input, step);
        assert!(r.rewriting());
        assert_eq!(server_view(&out), want, "step {step}");
        // DATA and SETTINGS frames, and each block's flags, as the client sent them.
        let kinds: Vec<(u8, u8, u32)> = frames(&out).iter().map(|f| (f.0, f.1, f.2)).collect();
        let sent: Vec<(u8, u8, u32)> = frames(&input).iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(kinds, sent);
        let data = |b: &[u8]| -> Vec<Vec<u8>> {
            frames(b)
                .into_iter()
                .filter(|f| f.0 != HEADERS)
                .map(|f| f.3)
                .collect()
        };
        assert_eq!(data(&out), data(&input));
        outputs.push(out);
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "same output however the input is split"
    );
}

#[test]
fn an_authority_with_no_valid_host_is_dropped() {
    let input = connection(b"unix:///var/run/etcd.sock", 1);
    let (out, _) = run(&input, 4);
    let view = server_view(&out);
    let mut want = request_fields(b"", "/etcdserverpb.Maintenance/Status");
    want.retain(|(n, _)| n != AUTHORITY);
    assert_eq!(view, vec![(1, want)]);
    assert_eq!(
        host_port(b"https://[::1]:2379/path"),
        Some(b"[::1]:2379".to_vec())
    );
    assert_eq!(host_port(b"http://"), None);
}

#[test]
fn padded_prioritized_and_continued_blocks_are_read_and_large_ones_split() {
    let mut encoder = loona_hpack::Encoder::new();
    let big = "x".repeat(40_000);
    let mut fields = request_fields(b"http://127.0.0.1:2379", "/p");
    fields.push((b"x-big".to_vec(), big.as_bytes().to_vec()));
    let block = encode(&mut encoder, &fields);
    // HEADERS padded (3 bytes) with a priority, then two CONTINUATIONs.
    let (a, rest) = block.split_at(100);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut payload = vec![3];
    payload.extend([0, 0, 0, 0, 16]);
    payload.extend(a);
    payload.extend([0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &payload));
    input.extend(frame(CONTINUATION, 0, 5, b));
    input.extend(frame(CONTINUATION, END_HEADERS, 5, c));
    let (out, _) = run(&input, 333);
    let mut want = fields.clone();
    want[3].1 = b"127.0.0.1:2379".to_vec();
    assert_eq!(server_view(&out), vec![(5, want)]);
    let out_frames = frames(&out);
    assert!(out_frames.len() >= 3, "40 kB goes out in several frames");
    assert!(out_frames.iter().all(|f| f.3.len() <= FRAME_MAX));
    assert_eq!(out_frames[0].1 & END_STREAM, END_STREAM, "END_STREAM kept");
}

#[test]
fn an_endless_header_block_is_refused() {
    let mut rewriter = Rewriter::default();
    let mut input = BytesMut::from(PREFACE);
    let mut out = BytesMut::new();
    input.put_slice(&frame(HEADERS, 0, 1, &[0x82]));
    rewriter.feed(&mut input, &mut out).unwrap();
    let mut refused = false;
    for _ in 0..(HEADER_BLOCK_MAX / FRAME_MAX + 2) {
        input.put_slice(&frame(CONTINUATION, 0, 1, &[0u8; FRAME_MAX]));
        if rewriter.feed(&mut input, &mut out).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a header block is bounded");
}
