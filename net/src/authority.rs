//! Accepts gRPC requests whose HTTP/2 `:authority` is not a valid authority, as etcd's server
//! does. etcd 3.4's client dials some calls straight to one endpoint URL and then sends that
//! URL as the authority: `etcdctl --endpoints=http://127.0.0.1:2379 endpoint status` sends
//! `:authority: http://127.0.0.1:2379`, and so does `endpoint status --cluster`, which uses the
//! client URLs MemberList gives. The HTTP/2 server under tonic (h2) resets such a stream with
//! PROTOCOL_ERROR; etcd's Go server serves it.
//!
//! Every client connection is read through [`LenientAuthority`]: it follows the bytes the
//! client sends (the HTTP/2 preface, then frame by frame) until the first header block. If
//! that block's authority is valid or absent — every well-behaved client — the rest of the
//! connection passes through untouched. If not, the connection is *rewritten* from there on:
//! each header block is decoded (HPACK, with this connection's own decoder state, as the
//! server's would be), its authority replaced by its `host:port` part (or dropped when even
//! that is not valid), and re-encoded with an encoder whose state the server's decoder then
//! follows; other frames pass unchanged. A connection that does not start with the HTTP/2
//! preface (HTTP/1: the JSON gateway, /metrics, /health) passes through untouched.
//!
//! Invariants: bytes the client sent are passed on in order, never dropped nor reordered; the
//! server sees either the client's own header blocks (pass-through) or, from the first
//! rewritten block on, only rewritten ones (its HPACK state follows one encoder); a header
//! block is buffered whole (bounded by [`HEADER_BLOCK_MAX`]); a decoding failure while
//! rewriting closes the connection with an error rather than feeding the server garbage.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::uri::Authority;
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface of HTTP/2.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's initial value).
const FRAME_MAX: usize = 16_384;
/// The largest header block buffered (HEADERS and its CONTINUATIONs); larger ones fail.
pub const HEADER_BLOCK_MAX: usize = 1 << 20;

/// What the rewriter is doing with the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading the first bytes: the HTTP/2 preface or something else.
    Preface,
    /// Following frames, before the first header block (`rewrite == false`) or rewriting.
    Frames,
    /// Passing every byte through from here on.
    Pass,
}

/// A header block being gathered: its first frame's stream and flags, its fragments so far,
/// and the raw frames (passed on as they are when nothing needs rewriting).
struct Block {
    stream: u32,
    end_stream: bool,
    fragment: Vec<u8>,
    raw: Vec<u8>,
}

/// The byte-stream transformation (see the module comment), without I/O.
pub struct Rewriter {
    stage: Stage,
    rewrite: bool,
    /// Payload bytes of the current frame still to pass through.
    passing: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            stage: Stage::Preface,
            rewrite: false,
            passing: 0,
            block: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
        }
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Rewriter {
    /// Whether every further byte passes through unchanged.
    pub fn passing_all(&self) -> bool {
        self.stage == Stage::Pass
    }

    /// Whether this connection's header blocks are being rewritten.
    pub fn rewriting(&self) -> bool {
        self.rewrite
    }

    /// Moves what can be decided from `input` to `out` (consuming it from `input`); leaves an
    /// incomplete frame in `input` for more bytes.
    pub fn feed(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> io::Result<()> {
        loop {
            match self.stage {
                Stage::Pass => {
                    out.put(input.split());
                    return Ok(());
                }
                Stage::Preface => {
                    let n = input.len().min(PREFACE.len());
                    if input[..n] != PREFACE[..n] {
                        self.stage = Stage::Pass;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    out.put(input.split_to(PREFACE.len()));
                    self.stage = Stage::Frames;
                }
                Stage::Frames => {
                    if self.passing > 0 {
                        let n = self.passing.min(input.len());
                        out.put(input.split_to(n));
                        self.passing -= n;
                        if self.passing > 0 {
                            return Ok(());
                        }
                        continue;
                    }
                    if input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = (usize::from(input[0]) << 16)
                        | (usize::from(input[1]) << 8)
                        | usize::from(input[2]);
                    let kind = input[3];
                    let gathering = self.block.is_some();
                    if kind != HEADERS && kind != CONTINUATION && !gathering {
                        out.put(input.split_to(FRAME_HEADER));
                        self.passing = len;
                        continue;
                    }
                    if input.len() < FRAME_HEADER + len {
                        let held = self.block.as_ref().map_or(0, |b| b.raw.len());
                        if held + FRAME_HEADER + len > HEADER_BLOCK_MAX {
                            return Err(invalid(format!(
                                "header block over {HEADER_BLOCK_MAX} bytes"
                            )));
                        }
                        return Ok(());
                    }
                    let frame = input.split_to(FRAME_HEADER + len);
                    self.frame(&frame, out)?;
                }
            }
        }
    }

    /// One whole HEADERS or CONTINUATION frame (or any frame while a block is open, which the
    /// server will refuse: passed on as it came).
    fn frame(&mut self, frame: &[u8], out: &mut BytesMut) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        let fragment = match kind {
            HEADERS if self.block.is_none() => {
                let mut start = 0;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = usize::from(*payload.first().unwrap_or(&0));
                    start = 1;
                }
                if flags & PRIORITY != 0 {
                    start += 5;
                }
                if start + pad > payload.len() {
                    return self.malformed(frame, out);
                }
                self.block = Some(Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    fragment: Vec::new(),
                    raw: Vec::new(),
                });
                &payload[start..payload.len() - pad]
            }
            CONTINUATION if self.block.as_ref().is_some_and(|b| b.stream == stream) => payload,
            _ => return self.malformed(frame, out),
        };
        let block = self.block.as_mut().expect("a block is open");
        block.fragment.extend_from_slice(fragment);
        block.raw.extend_from_slice(frame);
        if block.raw.len() > HEADER_BLOCK_MAX {
            return Err(invalid(format!(
                "header block over {HEADER_BLOCK_MAX} bytes"
            )));
        }
        if flags & END_HEADERS == 0 {
            return Ok(());
        }
        let block = self.block.take().expect("a block is open");
        self.finish(block, out)
    }

    /// A frame out of HTTP/2's rules: before any rewrite, everything passes through and the
    /// server answers it; once rewriting, the connection cannot go on.
    fn malformed(&mut self, frame: &[u8], out: &mut BytesMut) -> io::Result<()> {
        if self.rewrite {
            return Err(invalid("malformed header frames".to_owned()));
        }
        if let Some(block) = self.block.take() {
            out.put_slice(&block.raw);
        }
        out.put_slice(frame);
        self.stage = Stage::Pass;
        Ok(())
    }

    fn finish(&mut self, block: Block, out: &mut BytesMut) -> io::Result<()> {
        let fields = match self.decoder.decode(&block.fragment) {
            Ok(fields) => fields,
            Err(err) if self.rewrite => return Err(invalid(format!("HPACK: {err:?}"))),
            Err(_) => {
                // The server's decoder will refuse it the same way.
                out.put_slice(&block.raw);
                self.stage = Stage::Pass;
                return Ok(());
            }
        };
        if !self.rewrite {
            let bad = fields
                .iter()
                .any(|(n, v)| n == b":authority" && Authority::try_from(v.as_slice()).is_err());
            if !bad {
                out.put_slice(&block.raw);
                self.stage = Stage::Pass;
                return Ok(());
            }
            self.rewrite = true;
        }
        let fields: Vec<(Vec<u8>, Vec<u8>)> = fields
            .into_iter()
            .filter_map(|(name, value)| {
                if name != b":authority" || Authority::try_from(value.as_slice()).is_ok() {
                    return Some((name, value));
                }
                host_port(&value).map(|fixed| (name, fixed))
            })
            .collect();
        let encoded = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_block(out, block.stream, block.end_stream, &encoded);
        Ok(())
    }
}

/// The `host:port` inside a URL-shaped authority (`http://h:p/x` gives `h:p`), when that is a
/// valid authority.
fn host_port(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return None;
    }
    Authority::try_from(host)
        .ok()
        .map(|_| host.as_bytes().to_vec())
}

/// A header block as one HEADERS frame and as many CONTINUATIONs as its size needs.
fn write_block(out: &mut BytesMut, stream: u32, end_stream: bool, block: &[u8]) {
    let mut chunks = block.chunks(FRAME_MAX).peekable();
    let mut first = true;
    if block.is_empty() {
        put_frame_header(out, 0, HEADERS, END_HEADERS | end_flag(end_stream), stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let (kind, mut flags) = if first {
            (HEADERS, end_flag(end_stream))
        } else {
            (CONTINUATION, 0)
        };
        if last {
            flags |= END_HEADERS;
        }
        put_frame_header(out, chunk.len(), kind, flags, stream);
        out.put_slice(chunk);
        first = false;
    }
}

fn end_flag(end_stream: bool) -> u8 {
    if end_stream {
        END_STREAM
    } else {
        0
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).expect("a frame fits its 24-bit length");
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

/// A client connection read through a [`Rewriter`]; writes go straight to `inner`.
pub struct LenientAuthority<IO> {
    inner: IO,
    rewriter: Rewriter,
    input: BytesMut,
    output: BytesMut,
    eof: bool,
}

impl<IO> LenientAuthority<IO> {
    pub fn new(inner: IO) -> Self {
        LenientAuthority {
            inner,
            rewriter: Rewriter::default(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
        }
    }
}

/// How much is read from the socket at once while frames are followed.
const READ_CHUNK: usize = 16 << 10;

impl<IO: AsyncRead + Unpin> AsyncRead for LenientAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.passing_all() && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // What is left is an incomplete frame: the server sees the connection end.
                this.output.put(this.input.split());
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let before = this.input.len();
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                    }
                    this.input.put_slice(read.filled());
                }
            }
            if this.input.len() > before || this.eof {
                this.rewriter.feed(&mut this.input, &mut this.output)?;
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for LenientAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for LenientAuthority<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
