//! The stream framer (`ingest::framing`): the same stream fed whole and fed in pieces, as
//! reads of a socket deliver it.
//!
//! Input: byte 0 picks `max_frame_bytes` (1..=64, so oversize paths are near), byte 1 seeds
//! the read sizes, the rest is the stream. Invariants:
//! - every frame delivered is a non-empty run of the stream, at most `max_frame_bytes` long,
//!   after the previous one (nothing duplicated, nothing out of order);
//! - between two frames with no rejection in between, only framing is skipped (octet counts,
//!   their space, CR and LF): no message byte is dropped without a rejection counted;
//! - at end of stream everything is consumed; before it, what is left unconsumed is at most one
//!   frame and its header (the connection's buffer is sized on that);
//! - `Truncated` comes only at end of stream, as the last result;
//! - the results do not depend on where reads split the stream.

use logwarden::ingest::framing::{Framer, Reject};

/// An octet count's header is at most 10 digits and a space.
const MAX_HEADER: usize = 11;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// A frame: its offset in the stream and its bytes.
    Frame(usize, Vec<u8>),
    Reject(Reject),
}

pub fn run(data: &[u8]) {
    let [a, b, stream @ ..] = data else { return };
    let max_frame = usize::from(*a % 64) + 1;
    let whole = feed_whole(stream, max_frame);
    check_items(stream, max_frame, &whole);
    let pieces = feed_in_pieces(stream, max_frame, *b);
    assert_eq!(whole, pieces, "framing depends on read boundaries (max_frame_bytes {max_frame})");
}

fn feed_whole(stream: &[u8], max_frame: usize) -> Vec<Item> {
    let mut framer = Framer::new(max_frame);
    let mut items = Vec::new();
    let used = framer.feed(stream, true, |r| items.push(item(stream, 0, r)));
    assert_eq!(used, stream.len(), "end of stream left bytes unconsumed");
    items
}

/// Reads of 1 to 16 bytes, sizes from an xorshift seeded by `seed`, with the unconsumed rest
/// kept in front of the next read as `ingest::connection` does.
fn feed_in_pieces(stream: &[u8], max_frame: usize, seed: u8) -> Vec<Item> {
    let mut framer = Framer::new(max_frame);
    let mut items = Vec::new();
    let mut rng = u32::from(seed) | 0x100;
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (rng % 16) as usize + 1;
        end = (end + n).min(stream.len());
        let eof = end == stream.len();
        let before = items.len();
        let used = framer.feed(&stream[start..end], eof, |r| items.push(item(stream, start, r)));
        assert!(used <= end - start, "consumed more than it was given");
        if items[before..].contains(&Item::Reject(Reject::Truncated)) {
            assert!(eof, "Truncated before the end of the stream");
        }
        start += used;
        if eof {
            assert_eq!(start, end, "end of stream left bytes unconsumed");
            return items;
        }
        let left = end - start;
        assert!(
            left <= max_frame + MAX_HEADER,
            "{left} bytes left unconsumed with max_frame_bytes {max_frame}: more than one frame and its header"
        );
    }
}

/// A result as an [`Item`], with the frame's offset in the whole stream (`base` is where the
/// buffer given to `feed` starts).
fn item(stream: &[u8], base: usize, r: Result<&[u8], Reject>) -> Item {
    match r {
        Err(e) => Item::Reject(e),
        Ok(frame) => {
            let offset = (frame.as_ptr() as usize).wrapping_sub(stream.as_ptr() as usize);
            assert!(
                offset >= base && offset + frame.len() <= stream.len(),
                "a frame that is not part of the buffer it was cut from"
            );
            Item::Frame(offset, frame.to_vec())
        }
    }
}

fn check_items(stream: &[u8], max_frame: usize, items: &[Item]) {
    let mut next = 0; // first stream byte after the previous frame
    let mut rejected = false; // a rejection since the previous frame
    for (i, it) in items.iter().enumerate() {
        match it {
            Item::Reject(r) => {
                rejected = true;
                if *r == Reject::Truncated {
                    assert_eq!(i, items.len() - 1, "Truncated is not the last result");
                }
            }
            Item::Frame(at, frame) => {
                assert!(!frame.is_empty(), "an empty frame delivered");
                assert!(
                    frame.len() <= max_frame,
                    "a frame of {} bytes over max_frame_bytes {max_frame}",
                    frame.len()
                );
                assert!(*at >= next, "frames overlap or go backwards");
                if !rejected {
                    assert_framing_only(&stream[next..*at]);
                }
                next = at + frame.len();
                rejected = false;
            }
        }
    }
    if !rejected {
        assert_framing_only(&stream[next..]);
    }
}

fn assert_framing_only(skipped: &[u8]) {
    assert!(
        skipped.iter().all(|c| c.is_ascii_digit() || matches!(c, b' ' | b'\r' | b'\n')),
        "bytes dropped without a rejection: {:?}",
        String::from_utf8_lossy(skipped)
    );
}
