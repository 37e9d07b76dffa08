//! The WebSocket wire format (RFC 6455, section 5) as the hub needs it: server frames encoded once (a server's frames
//! are not masked, so every subscriber is sent the very same bytes), and what a client sends parsed as it arrives.
//! No extension is negotiated, so the reserved bits must be clear.

use axum::body::Bytes;

pub(super) const OP_CONTINUATION: u8 = 0x0;
pub(super) const OP_TEXT: u8 = 0x1;
pub(super) const OP_BINARY: u8 = 0x2;
pub(super) const OP_CLOSE: u8 = 0x8;
pub(super) const OP_PING: u8 = 0x9;
pub(super) const OP_PONG: u8 = 0xA;

/// A control frame's payload is at most this long (RFC 6455, 5.5).
const MAX_CONTROL: u64 = 125;

/// One unfragmented server frame: FIN, `opcode`, the length in its shortest form, `payload`.
pub(super) fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let n = payload.len();
    let mut v = Vec::with_capacity(n + 10);
    v.push(0x80 | opcode);
    if n < 126 {
        v.push(n as u8);
    } else if n <= 0xFFFF {
        v.push(126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// The bytes before the payload in a frame made by [`encode`] for a payload of `n` bytes.
pub(super) fn header_len(n: usize) -> usize {
    if n < 126 {
        2
    } else if n <= 0xFFFF {
        4
    } else {
        10
    }
}

/// A close frame with `code` and `reason` (no payload when `code` is `None`).
pub(super) fn close(code: Option<u16>, reason: &str) -> Bytes {
    match code {
        None => encode(OP_CLOSE, &[]),
        Some(c) => {
            let mut p = c.to_be_bytes().to_vec();
            // A close payload is a control frame's: at most 125 bytes.
            p.extend_from_slice(&reason.as_bytes()[..reason.len().min(MAX_CONTROL as usize - 2)]);
            encode(OP_CLOSE, &p)
        }
    }
}

/// What a client sent, as far as the hub cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Incoming {
    /// A ping with its (unmasked) payload: answered with a pong carrying it.
    Ping(Vec<u8>),
    Pong,
    /// A whole data message (its content is of no use to a subscriber stream and is dropped).
    Message,
    /// A close frame, with its status code when it has one (always one a peer may send: [`peer_may_send`]).
    Close(Option<u16>),
    /// A frame or a message longer than the limit: closed with 1009.
    Oversized,
    /// A frame the protocol forbids: closed with 1002.
    Bad(&'static str),
    /// A text message or a close reason that is not UTF-8: closed with 1007.
    NotUtf8(&'static str),
}

/// Whether `code` is a close code a peer may send (RFC 6455, 7.4): 1000–1003, 1007–1014 (1004–1006 and 1015 are
/// reserved for reporting, not for the wire), or 3000–4999 (registered and private codes); any other is a protocol
/// error.
pub(super) fn peer_may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The frame whose payload is being read.
#[derive(Debug)]
struct Current {
    opcode: u8,
    fin: bool,
    len: u64,
    read: u64,
    mask: [u8; 4],
    /// A control frame's payload, unmasked (at most 125 bytes; data payloads are skipped, not kept).
    control: Vec<u8>,
}

/// A client's frames, parsed from the bytes as they come, however they are split. After a [`Incoming::Close`],
/// [`Incoming::Oversized`] or [`Incoming::Bad`] nothing more is parsed.
#[derive(Debug)]
pub(super) struct ClientFrames {
    max: u64,
    /// A header being gathered (at most 14 bytes).
    head: Vec<u8>,
    current: Option<Current>,
    /// Bytes of the fragmented data message in progress (`None`: no message in progress).
    message: Option<u64>,
    /// The text message in progress (`None`: none, or a binary one): the bytes of its last character not all
    /// read yet (at most 3), to check it is UTF-8 without keeping it.
    text: Option<Vec<u8>>,
    done: bool,
}

impl ClientFrames {
    /// A parser refusing frames and messages over `max` bytes.
    pub(super) fn new(max: usize) -> ClientFrames {
        ClientFrames { max: max as u64, head: Vec::new(), current: None, message: None, text: None, done: false }
    }

    /// Parses `data`, appending what it completes to `out`.
    pub(super) fn feed(&mut self, mut data: &[u8], out: &mut Vec<Incoming>) {
        while !data.is_empty() && !self.done {
            if let Some(c) = &mut self.current {
                let take = ((c.len - c.read) as usize).min(data.len());
                let unmasked = data[..take].iter().enumerate().map(|(i, b)| b ^ c.mask[(c.read as usize + i) % 4]);
                if c.opcode >= OP_CLOSE {
                    c.control.extend(unmasked);
                } else if let Some(tail) = &mut self.text {
                    if !utf8_so_far(tail, unmasked) {
                        self.done = true;
                        out.push(Incoming::NotUtf8("a text message that is not UTF-8"));
                        return;
                    }
                }
                c.read += take as u64;
                data = &data[take..];
                if c.read == c.len {
                    self.finish(out);
                }
                continue;
            }
            // Gather a header: 2 bytes, then the extended length and the mask key they announce.
            let need = if self.head.len() < 2 { 2 } else { Self::header_size(&self.head) };
            let take = (need - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() >= 2 && self.head.len() == Self::header_size(&self.head) {
                self.start(out);
            }
        }
    }

    /// The whole header's size from its first two bytes.
    fn header_size(h: &[u8]) -> usize {
        let ext = match h[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// A whole header is in `head`: check it and start its frame.
    fn start(&mut self, out: &mut Vec<Incoming>) {
        let h = std::mem::take(&mut self.head);
        let (fin, rsv, opcode) = (h[0] & 0x80 != 0, h[0] & 0x70, h[0] & 0x0F);
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7F {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
            127 => (u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()), 10),
            n => (n as u64, 2),
        };
        let bad = if rsv != 0 {
            Some("a reserved bit is set (no extension was agreed)")
        } else if !masked {
            Some("a client's frame must be masked")
        } else if !matches!(opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
            Some("an unknown opcode")
        } else if opcode >= OP_CLOSE && !fin {
            Some("a fragmented control frame")
        } else if opcode >= OP_CLOSE && len > MAX_CONTROL {
            Some("a control frame over 125 bytes")
        } else if opcode == OP_CONTINUATION && self.message.is_none() {
            Some("a continuation frame outside a message")
        } else if matches!(opcode, OP_TEXT | OP_BINARY) && self.message.is_some() {
            Some("a new message inside a fragmented one")
        } else if len >> 63 != 0 {
            Some("a length with its most significant bit set")
        } else {
            None
        };
        if let Some(why) = bad {
            self.done = true;
            out.push(Incoming::Bad(why));
            return;
        }
        if opcode < OP_CLOSE {
            let so_far = if opcode == OP_CONTINUATION { self.message.unwrap_or(0) } else { 0 };
            let total = so_far.saturating_add(len);
            if total > self.max {
                self.done = true;
                out.push(Incoming::Oversized);
                return;
            }
            self.message = Some(total);
            match opcode {
                OP_TEXT => self.text = Some(Vec::new()),
                OP_BINARY => self.text = None,
                _ => {}
            }
        }
        let mask = [h[at], h[at + 1], h[at + 2], h[at + 3]];
        self.current = Some(Current { opcode, fin, len, read: 0, mask, control: Vec::new() });
        if len == 0 {
            self.finish(out);
        }
    }

    /// The current frame's payload is all read.
    fn finish(&mut self, out: &mut Vec<Incoming>) {
        let Some(c) = self.current.take() else { return };
        match c.opcode {
            OP_PING => out.push(Incoming::Ping(c.control)),
            OP_PONG => out.push(Incoming::Pong),
            OP_CLOSE => {
                self.done = true;
                out.push(match c.control[..] {
                    [] => Incoming::Close(None),
                    [_] => Incoming::Bad("a close payload of one byte (a code is two)"),
                    [a, b, ..] if !peer_may_send(u16::from_be_bytes([a, b])) => {
                        Incoming::Bad("a close code a peer may not send")
                    }
                    [a, b, ref reason @ ..] => match std::str::from_utf8(reason) {
                        Ok(_) => Incoming::Close(Some(u16::from_be_bytes([a, b]))),
                        Err(_) => Incoming::NotUtf8("a close reason that is not UTF-8"),
                    },
                });
            }
            _ if c.fin => {
                self.message = None;
                // A text message must not end inside a character.
                if self.text.take().is_some_and(|tail| !tail.is_empty()) {
                    self.done = true;
                    out.push(Incoming::NotUtf8("a text message that is not UTF-8"));
                    return;
                }
                out.push(Incoming::Message);
            }
            _ => {}
        }
    }
}

/// Whether a text message is UTF-8 so far, with `bytes` its next ones: `tail` holds the bytes of a character cut at
/// the end of what came before (kept for the next call; at most 3). Allocates only while a text message is read.
fn utf8_so_far(tail: &mut Vec<u8>, bytes: impl Iterator<Item = u8>) -> bool {
    let mut all = std::mem::take(tail);
    all.extend(bytes);
    match std::str::from_utf8(&all) {
        Ok(_) => true,
        // Cut inside a character: the rest may complete it.
        Err(e) if e.error_len().is_none() => {
            *tail = all[e.valid_up_to()..].to_vec();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: `first` byte (FIN, opcode), masked with `mask`.
    fn client(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let n = payload.len();
        let mut v = vec![first];
        if n < 126 {
            v.push(0x80 | n as u8);
        } else if n <= 0xFFFF {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    /// Parses `bytes` fed in pieces of `step` bytes.
    fn parse(bytes: &[u8], step: usize, max: usize) -> Vec<Incoming> {
        let mut p = ClientFrames::new(max);
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            p.feed(piece, &mut out);
        }
        out
    }

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        assert_eq!(&encode(OP_TEXT, b"hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = encode(OP_TEXT, &[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        assert_eq!(header_len(300), 4);
        let big = encode(OP_BINARY, &vec![0; 70_000]);
        assert_eq!(&big[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.len() - header_len(70_000), 70_000);
        assert_eq!(header_len(125), 2);
        assert_eq!(header_len(126), 4);
        assert_eq!(header_len(65_536), 10);
        assert_eq!(&close(Some(1009), "message too big")[..4], &[0x88, 17, 0x03, 0xF1]);
        assert_eq!(&close(None, "")[..], &[0x88, 0]);
        assert_eq!(close(Some(1000), &"r".repeat(300)).len(), 2 + 125, "a close payload is cut to 125 bytes");
    }

    #[test]
    fn frames_split_at_every_byte_parse_the_same() {
        let mut all = Vec::new();
        all.extend(client(0x89, b"ping!", [1, 2, 3, 4]));
        all.extend(client(0x81, &[b'a'; 200], [9, 8, 7, 6]));
        all.extend(client(0x8A, b"", [0, 0, 0, 0]));
        all.extend(client(0x82, &[7; 70_000], [5, 5, 5, 5]));
        all.extend(client(0x88, &[0x03, 0xE8, b'b', b'y', b'e'], [0xAA, 0xBB, 0xCC, 0xDD]));
        let want = vec![
            Incoming::Ping(b"ping!".to_vec()),
            Incoming::Message,
            Incoming::Pong,
            Incoming::Message,
            Incoming::Close(Some(1000)),
        ];
        for step in [1, 2, 3, 7, 13, 100, all.len()] {
            assert_eq!(parse(&all, step, 100_000), want, "pieces of {step} bytes");
        }
    }

    #[test]
    fn a_fragmented_message_counts_once_and_its_size_is_the_sum() {
        let mut m = Vec::new();
        m.extend(client(0x01, &[b'a'; 10], [1, 1, 1, 1]));
        // A ping may come between fragments.
        m.extend(client(0x89, b"", [1, 1, 1, 1]));
        m.extend(client(0x00, &[b'a'; 10], [1, 1, 1, 1]));
        m.extend(client(0x80, &[b'a'; 10], [1, 1, 1, 1]));
        assert_eq!(parse(&m, 1, 30), vec![Incoming::Ping(vec![]), Incoming::Message]);
        // One byte over the limit across the fragments.
        assert_eq!(parse(&m, 5, 29), vec![Incoming::Ping(vec![]), Incoming::Oversized]);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header() {
        // Only the header arrives: the length alone decides.
        let f = client(0x81, &[0; 20_000], [1, 2, 3, 4]);
        assert_eq!(parse(&f[..8], 1, 16 * 1024), vec![Incoming::Oversized]);
        assert_eq!(parse(&f, 4096, 20_000), vec![Incoming::Message]);
        // Nothing is parsed after it.
        let mut g = f.clone();
        g.extend(client(0x89, b"", [0; 4]));
        assert_eq!(parse(&g, 64, 100), vec![Incoming::Oversized]);
    }

    #[test]
    fn frames_the_protocol_forbids_are_bad() {
        let unmasked = [0x81, 1, b'x'];
        assert!(matches!(parse(&unmasked, 1, 100)[..], [Incoming::Bad(_)]));
        for first in [0xC1u8, 0xA1, 0x91, 0x83, 0x8B, 0x09, 0x00, 0x80] {
            let out = parse(&client(first, b"x", [1, 2, 3, 4]), 1, 100);
            assert!(matches!(out[..], [Incoming::Bad(_)]), "{first:#x}: {out:?}");
        }
        let long_ping = client(0x89, &[0; 126], [1, 2, 3, 4]);
        assert!(matches!(parse(&long_ping, 3, 1000)[..], [Incoming::Bad(_)]));
        let mut nested = client(0x01, b"a", [1, 2, 3, 4]);
        nested.extend(client(0x81, b"b", [1, 2, 3, 4]));
        assert!(matches!(parse(&nested, 2, 100)[..], [Incoming::Bad(_)]));
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(parse(&huge, 1, usize::MAX)[..], [Incoming::Bad(_)]));
    }

    /// RFC 6455, 7.4: a close code a peer may not send, or a payload of one byte, is a protocol error (1002); a reason
    /// that is not UTF-8 is invalid data (1007).
    #[test]
    fn close_codes_and_reasons_are_checked() {
        let close = |payload: &[u8]| parse(&client(0x88, payload, [3, 1, 4, 1]), 1, 10);
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, u16::MAX] {
            assert!(matches!(close(&code.to_be_bytes())[..], [Incoming::Bad(_)]), "{code}");
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4000, 4999] {
            assert_eq!(close(&code.to_be_bytes()), [Incoming::Close(Some(code))], "{code}");
        }
        assert!(matches!(close(&[0x03])[..], [Incoming::Bad(_)]), "one byte");
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.extend_from_slice("au revoir, à bientôt".as_bytes());
        assert_eq!(close(&reason), [Incoming::Close(Some(1000))]);
        reason.push(0xC3);
        assert!(matches!(close(&reason)[..], [Incoming::NotUtf8(_)]), "a reason cut inside a character");
        assert!(matches!(close(&[0x03, 0xE8, 0xFF])[..], [Incoming::NotUtf8(_)]));
    }

    /// A text message must be UTF-8 as a whole: a character may be cut across frames and reads, not left unfinished;
    /// a binary message is not checked.
    #[test]
    fn a_text_message_must_be_utf8() {
        let text = "prix: 12 € — déjà".as_bytes();
        // Cut inside the euro sign (3 bytes) across two fragments.
        let at = text.iter().position(|b| *b == 0xE2).unwrap() + 1;
        let mut m = client(0x01, &text[..at], [1, 2, 3, 4]);
        m.extend(client(0x89, b"", [0; 4]));
        m.extend(client(0x80, &text[at..], [5, 6, 7, 8]));
        for step in [1, 2, 5, m.len()] {
            assert_eq!(parse(&m, step, 100), [Incoming::Ping(vec![]), Incoming::Message], "pieces of {step}");
        }
        for bad in [&b"ab\xFFcd"[..], &[0xED, 0xA0, 0x80], &[0xC0, 0xAF], &[b'a', 0xE2, 0x82]] {
            let out = parse(&client(0x81, bad, [9, 9, 9, 9]), 1, 100);
            assert!(matches!(out[..], [Incoming::NotUtf8(_)]), "{bad:?}: {out:?}");
        }
        // A message that ends inside a character, though each frame alone is a valid beginning.
        let mut cut = client(0x01, b"a", [1; 4]);
        cut.extend(client(0x80, &[0xE2, 0x82], [1; 4]));
        assert!(matches!(parse(&cut, 3, 100)[..], [Incoming::NotUtf8(_)]));
        // The check ends with the message: the next one starts afresh.
        let mut two = client(0x81, "é".as_bytes(), [1; 4]);
        two.extend(client(0x82, &[0xFF, 0xE2], [1; 4]));
        two.extend(client(0x81, b"ok", [1; 4]));
        assert_eq!(parse(&two, 1, 100), [Incoming::Message, Incoming::Message, Incoming::Message]);
    }

    #[test]
    fn a_close_without_a_code_and_the_pong_payload_is_unmasked() {
        assert_eq!(parse(&client(0x88, b"", [1, 2, 3, 4]), 1, 10), vec![Incoming::Close(None)]);
        assert_eq!(
            parse(&client(0x89, b"abcdefg", [0x10, 0x20, 0x30, 0x40]), 3, 10),
            vec![Incoming::Ping(b"abcdefg".to_vec())]
        );
    }
}
