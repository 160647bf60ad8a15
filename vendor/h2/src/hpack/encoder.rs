use super::header::HeaderRef;
use super::huffman;
use super::table::{Index, Table};
#[cfg(any(test, fuzzing))]
use super::Header;

use bytes::{BufMut, BytesMut};
#[cfg(any(test, fuzzing))]
use http::header::HeaderName;
use http::header::HeaderValue;

const DEFAULT_MAX_ALLOWED_SIZE: usize = 4 * 1024;

#[derive(Debug)]
pub struct Encoder {
    table: Table,
    max_allowed_size: usize,
    size_update: Option<SizeUpdate>,
    /// Reusable buffer for the encoded header block of a single frame.
    ///
    /// A header block only has to live until it is copied into the
    /// connection write buffer, so the buffer that holds it can be reused
    /// across frames instead of being allocated and freed per frame. See
    /// `take_scratch` / `return_scratch`.
    scratch: BytesMut,
    /// Codes of the names last written as string literals.
    names: NameCodes,
}

/// The encoded string literals (length prefix and Huffman code) of the
/// names last written as literals, looked up by the name's bytes.
///
/// A field whose value is never indexed (sensitive) and whose name is in
/// neither table goes with its name as a literal in every block: a request
/// id or a timing a proxy adds to each message. Coding the same name again
/// cost about as many instructions as the rest of the field. The code of a
/// string depends on its bytes alone, so a copy of it is what coding it
/// again would write.
///
/// Up to `NAME_CODES` names of at most `NAME_MAX` bytes whose literal fits
/// in `LITERAL_MAX`, in one allocation made with the first; the oldest is
/// replaced. Longer names are coded each time.
#[derive(Debug, Default)]
struct NameCodes {
    entries: Option<Box<[NameCode; NAME_CODES]>>,
    /// The entry replaced next.
    next: usize,
}

const NAME_CODES: usize = 4;
const NAME_MAX: usize = 32;
const LITERAL_MAX: usize = 48;

#[derive(Debug, Clone, Copy)]
struct NameCode {
    /// 0: unused (a name is never empty).
    name_len: u8,
    name: [u8; NAME_MAX],
    literal_len: u8,
    literal: [u8; LITERAL_MAX],
}

const UNUSED: NameCode = NameCode {
    name_len: 0,
    name: [0; NAME_MAX],
    literal_len: 0,
    literal: [0; LITERAL_MAX],
};

impl NameCodes {
    /// The literal `encode_str` writes for `name`, if kept.
    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        let entries = self.entries.as_deref()?;
        entries
            .iter()
            .find(|e| {
                e.name_len != 0
                    && usize::from(e.name_len) == name.len()
                    && e.name[..name.len()] == *name
            })
            .map(|e| &e.literal[..usize::from(e.literal_len)])
    }

    /// Keeps `literal`, what `encode_str` wrote for `name`, if both fit.
    fn put(&mut self, name: &[u8], literal: &[u8]) {
        if name.is_empty() || name.len() > NAME_MAX || literal.len() > LITERAL_MAX {
            return;
        }
        let entries = self
            .entries
            .get_or_insert_with(|| Box::new([UNUSED; NAME_CODES]));
        let e = &mut entries[self.next];
        e.name_len = name.len() as u8;
        e.name[..name.len()].copy_from_slice(name);
        e.literal_len = literal.len() as u8;
        e.literal[..literal.len()].copy_from_slice(literal);
        self.next = (self.next + 1) % NAME_CODES;
    }
}

#[derive(Debug, Copy, Clone, Eq, PartialEq)]
enum SizeUpdate {
    One(usize),
    Two(usize, usize), // min, max
}

impl Encoder {
    pub fn new(max_size: usize, capacity: usize) -> Encoder {
        let max_size = max_size.min(DEFAULT_MAX_ALLOWED_SIZE);

        Encoder {
            table: Table::new(max_size, capacity),
            max_allowed_size: DEFAULT_MAX_ALLOWED_SIZE,
            size_update: None,
            scratch: BytesMut::new(),
            names: NameCodes::default(),
        }
    }

    #[cfg(test)]
    fn set_max_allowed_size(&mut self, max: usize) {
        self.max_allowed_size = max;

        if self.table.max_size() > max {
            self.update_max_size(max);
        }
    }

    /// Takes the reusable buffer for one header-block encode.
    ///
    /// The buffer is returned by `return_scratch` once the encoded block has
    /// been copied into the write buffer. If it is not returned - the
    /// CONTINUATION path keeps it, since the remainder is still needed - the
    /// next call simply starts from a fresh buffer.
    pub(crate) fn take_scratch(&mut self) -> BytesMut {
        std::mem::take(&mut self.scratch)
    }

    /// Returns a fully-written header block buffer for reuse.
    pub(crate) fn return_scratch(&mut self, scratch: BytesMut) {
        self.scratch = scratch;
    }

    /// Queues a max size update.
    ///
    /// The next call to `encode` will include a dynamic size update frame.
    pub fn update_max_size(&mut self, val: usize) {
        let val = val.min(self.max_allowed_size);

        match self.size_update {
            Some(SizeUpdate::One(old)) => {
                if val > old {
                    if old > self.table.max_size() {
                        self.size_update = Some(SizeUpdate::One(val));
                    } else {
                        self.size_update = Some(SizeUpdate::Two(old, val));
                    }
                } else {
                    self.size_update = Some(SizeUpdate::One(val));
                }
            }
            Some(SizeUpdate::Two(min, _)) => {
                if val < min {
                    self.size_update = Some(SizeUpdate::One(val));
                } else {
                    self.size_update = Some(SizeUpdate::Two(min, val));
                }
            }
            None => {
                if val != self.table.max_size() {
                    // Don't bother writing a frame if the value already matches
                    // the table's max size.
                    self.size_update = Some(SizeUpdate::One(val));
                }
            }
        }
    }

    /// Encode a set of headers into the provide buffer
    ///
    /// A field without a name has the previous field's name (a `HeaderMap`'s
    /// `into_iter` order). Frames are encoded by reference instead
    /// (`encode_refs`); this is the owned form h2's tests use, over the
    /// same per-field code.
    #[cfg(any(test, fuzzing))]
    pub fn encode<I>(&mut self, headers: I, dst: &mut BytesMut)
    where
        I: IntoIterator<Item = Header<Option<HeaderName>>>,
    {
        let span = tracing::trace_span!("hpack::encode");
        let _e = span.enter();

        self.encode_size_updates(dst);

        let mut last: Option<(Index, Header)> = None;

        for header in headers {
            match header.reify() {
                // The header has an associated name. In which case, try to
                // index it in the table.
                Ok(header) => {
                    let index = self.encode_field(header.as_header_ref(), dst);
                    last = Some((index, header));
                }
                // The header does not have an associated name. This means that
                // the name is the same as the previously yielded header. In
                // which case, we skip table lookup and just use the same index
                // as the previous entry.
                Err(value) => {
                    let (index, last) = last.as_ref().unwrap_or_else(|| {
                        panic!(
                            "encoding header without name, but no previous index to use for name"
                        );
                    });
                    self.encode_header_without_name(index, last.name().as_slice(), &value, dst);
                }
            }
        }
    }

    /// Encodes a header block whose fields stay where they are: the
    /// pseudo-headers, then a `HeaderMap`'s `iter()`, which yields a name's
    /// further values right after its first. A field with the name of the
    /// field before it is encoded as `encode` encodes a field without a
    /// name (the previous field's name index, never inserted): a map holds
    /// each name in one entry, so that is exactly its further values, and
    /// the bytes are those `encode` produces for the same fields in
    /// `into_iter` order. Names are compared rather than the references
    /// `iter()` happens to share, which http does not promise.
    pub fn encode_refs<'a, I>(&mut self, headers: I, dst: &mut BytesMut)
    where
        I: IntoIterator<Item = HeaderRef<'a>>,
    {
        let span = tracing::trace_span!("hpack::encode");
        let _e = span.enter();

        self.encode_size_updates(dst);

        let mut last: Option<(Index, HeaderRef<'a>)> = None;

        for header in headers {
            if let (HeaderRef::Field { name, value }, Some((index, last))) = (header, &last) {
                if matches!(last, HeaderRef::Field { name: last_name, .. } if *last_name == name) {
                    self.encode_header_without_name(index, name.as_ref(), value, dst);
                    continue;
                }
            }
            let index = self.encode_field(header, dst);
            last = Some((index, header));
        }
    }

    fn encode_size_updates(&mut self, dst: &mut BytesMut) {
        match self.size_update.take() {
            Some(SizeUpdate::One(val)) => {
                self.table.resize(val);
                encode_size_update(val, dst);
            }
            Some(SizeUpdate::Two(min, max)) => {
                self.table.resize(min);
                self.table.resize(max);
                encode_size_update(min, dst);
                encode_size_update(max, dst);
            }
            None => {}
        }
    }

    /// Looks a field up (inserting it if the table should keep it) and
    /// encodes it; returns where it was found, for the fields without a
    /// name that may follow it.
    fn encode_field(&mut self, header: HeaderRef<'_>, dst: &mut BytesMut) -> Index {
        let index = self.table.index(header);

        match index {
            Index::Indexed(idx) => {
                encode_int(idx, 7, 0x80, dst);
            }
            Index::Name(idx) => {
                encode_not_indexed(idx, header.value_slice(), header.is_sensitive(), dst);
            }
            Index::Inserted(_) => {
                assert!(!header.is_sensitive());

                dst.put_u8(0b0100_0000);

                encode_str(header.name().as_slice(), dst);
                encode_str(header.value_slice(), dst);
            }
            Index::InsertedValue(idx, _) => {
                assert!(!header.is_sensitive());

                encode_int(idx, 6, 0b0100_0000, dst);
                encode_str(header.value_slice(), dst);
            }
            Index::NotIndexed => {
                encode_not_indexed2(
                    &mut self.names,
                    header.name().as_slice(),
                    header.value_slice(),
                    header.is_sensitive(),
                    dst,
                );
            }
        }

        index
    }

    fn encode_header_without_name(
        &mut self,
        last: &Index,
        last_name: &[u8],
        value: &HeaderValue,
        dst: &mut BytesMut,
    ) {
        match *last {
            Index::Indexed(..)
            | Index::Name(..)
            | Index::Inserted(..)
            | Index::InsertedValue(..) => {
                let idx = self.table.resolve_idx(last);

                encode_not_indexed(idx, value.as_ref(), value.is_sensitive(), dst);
            }
            Index::NotIndexed => {
                encode_not_indexed2(
                    &mut self.names,
                    last_name,
                    value.as_ref(),
                    value.is_sensitive(),
                    dst,
                );
            }
        }
    }
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new(4096, 0)
    }
}

fn encode_size_update(val: usize, dst: &mut BytesMut) {
    encode_int(val, 5, 0b0010_0000, dst)
}

fn encode_not_indexed(name: usize, value: &[u8], sensitive: bool, dst: &mut BytesMut) {
    if sensitive {
        encode_int(name, 4, 0b10000, dst);
    } else {
        encode_int(name, 4, 0, dst);
    }

    encode_str(value, dst);
}

fn encode_not_indexed2(
    names: &mut NameCodes,
    name: &[u8],
    value: &[u8],
    sensitive: bool,
    dst: &mut BytesMut,
) {
    if sensitive {
        dst.put_u8(0b10000);
    } else {
        dst.put_u8(0);
    }

    encode_name(names, name, dst);
    encode_str(value, dst);
}

/// A name as a string literal, copied from `names` if kept there.
///
/// Not inlined, as `encode_str` is not: inlined into `encode_field`, it
/// kept `Table::index` from being inlined there, which cost a gRPC call as
/// many instructions as the names' codes save.
#[inline(never)]
fn encode_name(names: &mut NameCodes, name: &[u8], dst: &mut BytesMut) {
    match names.get(name) {
        Some(literal) => dst.extend_from_slice(literal),
        None => {
            let start = position(dst);
            encode_str(name, dst);
            names.put(name, &dst[start..]);
        }
    }
}

fn encode_str(val: &[u8], dst: &mut BytesMut) {
    if !val.is_empty() {
        let idx = position(dst);

        // Push a placeholder byte for the length header
        dst.put_u8(0);

        // Encode with huffman
        huffman::encode(val, dst);

        let huff_len = position(dst) - (idx + 1);

        if encode_int_one_byte(huff_len, 7) {
            // Write the string head
            dst[idx] = 0x80 | huff_len as u8;
        } else {
            // Write the head to a placeholder
            const PLACEHOLDER_LEN: usize = 8;
            let mut buf = [0u8; PLACEHOLDER_LEN];

            let head_len = {
                let mut head_dst = &mut buf[..];
                encode_int(huff_len, 7, 0x80, &mut head_dst);
                PLACEHOLDER_LEN - head_dst.remaining_mut()
            };

            // This is just done to reserve space in the destination
            dst.put_slice(&buf[1..head_len]);

            // Shift the header forward
            for i in 0..huff_len {
                let src_i = idx + 1 + (huff_len - (i + 1));
                let dst_i = idx + head_len + (huff_len - (i + 1));
                dst[dst_i] = dst[src_i];
            }

            // Copy in the head
            for i in 0..head_len {
                dst[idx + i] = buf[i];
            }
        }
    } else {
        // Write an empty string
        dst.put_u8(0);
    }
}

/// Encode an integer into the given destination buffer
fn encode_int<B: BufMut>(
    mut value: usize,   // The integer to encode
    prefix_bits: usize, // The number of bits in the prefix
    first_byte: u8,     // The base upon which to start encoding the int
    dst: &mut B,
) {
    if encode_int_one_byte(value, prefix_bits) {
        dst.put_u8(first_byte | value as u8);
        return;
    }

    let low = (1 << prefix_bits) - 1;

    value -= low;

    dst.put_u8(first_byte | low as u8);

    while value >= 128 {
        dst.put_u8(0b1000_0000 | value as u8);

        value >>= 7;
    }

    dst.put_u8(value as u8);
}

/// Returns true if the in the int can be fully encoded in the first byte.
fn encode_int_one_byte(value: usize, prefix_bits: usize) -> bool {
    value < (1 << prefix_bits) - 1
}

fn position(buf: &BytesMut) -> usize {
    buf.len()
}

#[cfg(test)]
mod test {
    use super::*;
    use http::*;

    #[test]
    fn test_encode_method_get() {
        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![method("GET")]);
        assert_eq!(*res, [0x80 | 2]);
        assert_eq!(encoder.table.len(), 0);
    }

    #[test]
    fn test_encode_method_post() {
        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![method("POST")]);
        assert_eq!(*res, [0x80 | 3]);
        assert_eq!(encoder.table.len(), 0);
    }

    #[test]
    fn test_encode_method_patch() {
        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![method("PATCH")]);

        assert_eq!(res[0], 0b01000000 | 2); // Incremental indexing w/ name pulled from table
        assert_eq!(res[1], 0x80 | 5); // header value w/ huffman coding

        assert_eq!("PATCH", huff_decode(&res[2..7]));
        assert_eq!(encoder.table.len(), 1);

        let res = encode(&mut encoder, vec![method("PATCH")]);

        assert_eq!(1 << 7 | 62, res[0]);
        assert_eq!(1, res.len());
    }

    #[test]
    fn test_encode_indexed_name_literal_value() {
        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![header("content-language", "foo")]);

        assert_eq!(res[0], 0b01000000 | 27); // Indexed name
        assert_eq!(res[1], 0x80 | 2); // header value w/ huffman coding

        assert_eq!("foo", huff_decode(&res[2..4]));

        // Same name, new value should still use incremental
        let res = encode(&mut encoder, vec![header("content-language", "bar")]);
        assert_eq!(res[0], 0b01000000 | 27); // Indexed name
        assert_eq!(res[1], 0x80 | 3); // header value w/ huffman coding
        assert_eq!("bar", huff_decode(&res[2..5]));
    }

    #[test]
    fn test_repeated_headers_are_indexed() {
        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![header("foo", "hello")]);

        assert_eq!(&[0b01000000, 0x80 | 2], &res[0..2]);
        assert_eq!("foo", huff_decode(&res[2..4]));
        assert_eq!(0x80 | 4, res[4]);
        assert_eq!("hello", huff_decode(&res[5..]));
        assert_eq!(9, res.len());

        assert_eq!(1, encoder.table.len());

        let res = encode(&mut encoder, vec![header("foo", "hello")]);
        assert_eq!([0x80 | 62], *res);

        assert_eq!(encoder.table.len(), 1);
    }

    #[test]
    fn test_evicting_headers() {
        let mut encoder = Encoder::default();

        // Fill the table
        for i in 0..64 {
            let key = format!("x-hello-world-{:02}", i);
            let res = encode(&mut encoder, vec![header(&key, &key)]);

            assert_eq!(&[0b01000000, 0x80 | 12], &res[0..2]);
            assert_eq!(key, huff_decode(&res[2..14]));
            assert_eq!(0x80 | 12, res[14]);
            assert_eq!(key, huff_decode(&res[15..]));
            assert_eq!(27, res.len());

            // Make sure the header can be found...
            let res = encode(&mut encoder, vec![header(&key, &key)]);

            // Only check that it is found
            assert_eq!(0x80, res[0] & 0x80);
        }

        assert_eq!(4096, encoder.table.size());
        assert_eq!(64, encoder.table.len());

        // Find existing headers
        for i in 0..64 {
            let key = format!("x-hello-world-{:02}", i);
            let res = encode(&mut encoder, vec![header(&key, &key)]);
            assert_eq!(0x80, res[0] & 0x80);
        }

        // Insert a new header
        let key = "x-hello-world-64";
        let res = encode(&mut encoder, vec![header(key, key)]);

        assert_eq!(&[0b01000000, 0x80 | 12], &res[0..2]);
        assert_eq!(key, huff_decode(&res[2..14]));
        assert_eq!(0x80 | 12, res[14]);
        assert_eq!(key, huff_decode(&res[15..]));
        assert_eq!(27, res.len());

        assert_eq!(64, encoder.table.len());

        // Now try encoding entries that should exist in the table
        for i in 1..65 {
            let key = format!("x-hello-world-{:02}", i);
            let res = encode(&mut encoder, vec![header(&key, &key)]);
            assert_eq!(0x80 | (61 + (65 - i)), res[0]);
        }
    }

    /// Many values per name, entries evicted from the old end of their
    /// name's chain while newer ones stay, and the table resized now and
    /// then: every header decodes as encoded, and one the table holds is
    /// always sent as an index.
    #[test]
    fn test_chains_of_one_name_under_eviction() {
        use crate::hpack::Decoder;
        use rand::{Rng, SeedableRng};
        use std::io::Cursor;
        use std::ops::ControlFlow;

        let names = [
            "date",
            "x-a",
            "x-b",
            "content-type",
            "x-long-name-of-a-header",
        ];
        let values: Vec<String> = (0..60)
            .map(|i| format!("value-{i}-{}", "v".repeat(i % 7 * 9)))
            .collect();

        for seed in 0..8u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut encoder = Encoder::default();
            let mut decoder = Decoder::default();
            let mut indexed = 0;

            for _ in 0..4000 {
                // A size update goes first in the block: look at the
                // field's encoding only in blocks without one.
                let resized = rng.gen_ratio(1, 200);
                if resized {
                    let size = rng.gen_range(0..4096);
                    decoder.queue_size_update(size);
                    encoder.update_max_size(size);
                }

                // Skewed: the first values and names come up most, as a
                // response's current `date` does.
                let name = names[rng.gen_range(0..names.len())];
                let value = &values[(rng.gen_range(0.0f64..1.0).powi(3) * 60.0) as usize];
                let field = header(name, value);
                let held = encoder
                    .table
                    .contains(&field.clone().reify().expect("has a name"));

                let mut res = encode(&mut encoder, vec![field.clone()]);
                if held && !resized {
                    assert_eq!(0x80, res[0] & 0x80, "{name}: {value} held but not indexed");
                    indexed += 1;
                }

                let mut decoded = vec![];
                decoder
                    .decode(&mut Cursor::new(&mut res), |h| {
                        decoded.push(h);
                        ControlFlow::Continue(())
                    })
                    .expect("decodes");
                assert_eq!(decoded, vec![field.reify().expect("has a name")]);
            }

            assert!(indexed > 500, "seed {seed}: {indexed} indexed");
        }
    }

    /// Names whose hashes are equal: evicting the only entry of one must
    /// not take the position of the other, which still has entries and
    /// comes first in the probe sequence.
    #[test]
    fn test_eviction_with_colliding_name_hashes() {
        use crate::hpack::Decoder;
        use std::io::Cursor;
        use std::ops::ControlFlow;

        let hash = |name| Table::name_hash(&header(name, "1").reify().expect("has a name"));
        assert_eq!(hash("x-c496"), hash("x-c1587"));

        let mut encoder = Encoder::new(4096, 0);
        let mut decoder = Decoder::default();
        encoder.update_max_size(200);
        decoder.queue_size_update(200);

        let fields = [
            ("x-c496", "1"),
            ("x-c1587", "1"),
            ("x-c496", "2"),
            ("x-z", "1"),
            ("x-z", "2"),
            ("x-z", "3"),
            ("x-z", "4"),
            ("x-c1587", "1"),
            ("x-c496", "2"),
        ];
        for (name, value) in fields {
            let mut res = encode(&mut encoder, vec![header(name, value)]);
            let mut decoded = vec![];
            decoder
                .decode(&mut Cursor::new(&mut res), |h| {
                    decoded.push(h);
                    ControlFlow::Continue(())
                })
                .expect("decodes");
            assert_eq!(
                decoded,
                vec![header(name, value).reify().expect("has a name")]
            );
        }
        // The last field was still held: sent as an index.
        assert!(encoder
            .table
            .contains(&header("x-c496", "2").reify().expect("has a name")));
    }

    /// `encode_refs` (frames: pseudo-headers, then a `HeaderMap` by
    /// reference) produces the bytes `encode` does for the same block in
    /// `into_iter` order (a name's further values without a name), on
    /// encoders with the same history: names in the static table or not,
    /// several values of a name, sensitive and never-indexed values, blocks
    /// larger than the table, random table sizes.
    #[test]
    fn test_by_reference_encodes_as_owned() {
        use crate::hpack::header::BytesStr;
        use crate::hpack::Decoder;
        use http::header::HeaderMap;
        use rand::{Rng, SeedableRng};
        use std::io::Cursor;
        use std::ops::ControlFlow;

        const NAMES: [&str; 10] = [
            "content-type",
            "date",
            "set-cookie",
            "content-length",
            "authorization",
            "x-a",
            "x-b",
            "grpc-status",
            "accept-encoding",
            "x-a-much-longer-custom-header-name",
        ];
        const VALUES: [&str; 6] = ["0", "1", "gzip, deflate", "application/grpc", "", "v"];

        for seed in 0..8u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let size = [0, 64, 256, 4096][rng.gen_range(0..4)];
            let mut by_ref = Encoder::new(4096, 0);
            let mut owned = Encoder::new(4096, 0);
            let mut decoder = Decoder::default();
            by_ref.update_max_size(size);
            owned.update_max_size(size);
            decoder.queue_size_update(size);

            for _ in 0..500 {
                let mut pseudo: Vec<Header> = vec![];
                if rng.gen_bool(0.5) {
                    let method = ["GET", "POST", "PATCH"][rng.gen_range(0..3)];
                    pseudo.push(Header::Method(
                        Method::from_bytes(method.as_bytes()).unwrap(),
                    ));
                    let scheme = ["http", "https", "ftp"][rng.gen_range(0..3)];
                    pseudo.push(Header::Scheme(BytesStr::from(scheme)));
                    let authority = format!("host{}", rng.gen_range(0..4));
                    pseudo.push(Header::Authority(BytesStr::from(authority.as_str())));
                    let path = ["/", "/index.html", "/films", "/a/b?c"][rng.gen_range(0..4)];
                    pseudo.push(Header::Path(BytesStr::from(path)));
                } else {
                    let status = [200, 204, 404, 503][rng.gen_range(0..4)];
                    pseudo.push(Header::Status(StatusCode::from_u16(status).unwrap()));
                }

                let mut fields = HeaderMap::new();
                for _ in 0..rng.gen_range(0..12) {
                    let name = HeaderName::from_static(NAMES[rng.gen_range(0..NAMES.len())]);
                    let value = if rng.gen_bool(0.1) {
                        "x".repeat(rng.gen_range(100..400))
                    } else if rng.gen_bool(0.3) {
                        format!("{}", rng.gen_range(0..1000))
                    } else {
                        VALUES[rng.gen_range(0..VALUES.len())].to_string()
                    };
                    let mut value = HeaderValue::from_str(&value).unwrap();
                    value.set_sensitive(rng.gen_bool(0.1));
                    fields.append(name, value);
                }

                let mut expected: Vec<Header<Option<HeaderName>>> =
                    pseudo.iter().cloned().map(Into::into).collect();
                expected.extend(
                    fields
                        .clone()
                        .into_iter()
                        .map(|(name, value)| Header::Field { name, value }),
                );
                let mut want = BytesMut::new();
                owned.encode(expected, &mut want);

                let refs = pseudo.iter().map(Header::as_header_ref).chain(
                    fields
                        .iter()
                        .map(|(name, value)| HeaderRef::Field { name, value }),
                );
                let mut got = BytesMut::new();
                by_ref.encode_refs(refs, &mut got);
                assert_eq!(got, want, "seed {seed}");

                let mut decoded = vec![];
                decoder
                    .decode(&mut Cursor::new(&mut got), |h| {
                        decoded.push(h);
                        ControlFlow::Continue(())
                    })
                    .expect("decodes");
                let sent: Vec<Header> = pseudo
                    .into_iter()
                    .chain(fields.iter().map(|(name, value)| Header::Field {
                        name: name.clone(),
                        value: value.clone(),
                    }))
                    .collect();
                assert_eq!(decoded, sent, "seed {seed}");
            }
        }
    }

    #[test]
    fn test_large_headers_are_not_indexed() {
        let mut encoder = Encoder::new(128, 0);
        let key = "hello-world-hello-world-HELLO-zzz";

        let res = encode(&mut encoder, vec![header(key, key)]);

        assert_eq!(&[0, 0x80 | 25], &res[..2]);

        assert_eq!(0, encoder.table.len());
        assert_eq!(0, encoder.table.size());
    }

    #[test]
    fn test_sensitive_headers_are_never_indexed() {
        use http::header::HeaderValue;

        let name = "my-password".parse().unwrap();
        let mut value = HeaderValue::from_bytes(b"12345").unwrap();
        value.set_sensitive(true);

        let header = Header::Field {
            name: Some(name),
            value,
        };

        // Now, try to encode the sensitive header

        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![header]);

        assert_eq!(&[0b10000, 0x80 | 8], &res[..2]);
        assert_eq!("my-password", huff_decode(&res[2..10]));
        assert_eq!(0x80 | 4, res[10]);
        assert_eq!("12345", huff_decode(&res[11..]));

        // Now, try to encode a sensitive header w/ a name in the static table
        let name = "authorization".parse().unwrap();
        let mut value = HeaderValue::from_bytes(b"12345").unwrap();
        value.set_sensitive(true);

        let header = Header::Field {
            name: Some(name),
            value,
        };

        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![header]);

        assert_eq!(&[0b11111, 8], &res[..2]);
        assert_eq!(0x80 | 4, res[2]);
        assert_eq!("12345", huff_decode(&res[3..]));

        // Using the name component of a previously indexed header (without
        // sensitive flag set)

        let _ = encode(
            &mut encoder,
            vec![self::header("my-password", "not-so-secret")],
        );

        let name = "my-password".parse().unwrap();
        let mut value = HeaderValue::from_bytes(b"12345").unwrap();
        value.set_sensitive(true);

        let header = Header::Field {
            name: Some(name),
            value,
        };
        let res = encode(&mut encoder, vec![header]);

        assert_eq!(&[0b11111, 47], &res[..2]);
        assert_eq!(0x80 | 4, res[2]);
        assert_eq!("12345", huff_decode(&res[3..]));
    }

    /// Patch 11 (PATCHES.md): a name written as a literal again is written as coding it
    /// afresh writes it, whether its code was kept (short names, a few at
    /// a time), replaced by others', or never kept (a long name, a long
    /// code); and the blocks decode to what was sent.
    #[test]
    fn literal_names_kept_are_written_as_coded_afresh() {
        use crate::hpack::Decoder;
        use std::io::Cursor;
        use std::ops::ControlFlow;

        let names = [
            "x-request-id".to_string(),
            "x-envoy-upstream-service-time".to_string(),
            "a".to_string(),
            "x".repeat(NAME_MAX),
            "x".repeat(NAME_MAX + 1),
            // Each of these takes 13 bits or more: a 32-byte name whose
            // literal does not fit.
            "^~".repeat(NAME_MAX / 2),
            "custom-5".to_string(),
            "custom-6".to_string(),
            // Prefixes of kept names.
            "x-request".to_string(),
            "x".repeat(NAME_MAX - 1),
            // Literals of exactly `LITERAL_MAX` bytes (kept) and one more
            // (not): a backtick takes 15 bits, an `a` 5.
            format!("{}{}", "`".repeat(21), "a".repeat(11)),
            format!("{}{}", "`".repeat(22), "a".repeat(10)),
        ];
        // Sensitive fields on a full table, and any field with no table.
        for (table_size, sensitive) in [(4096, true), (0, false), (0, true)] {
            let mut encoder = Encoder::new(table_size, 0);
            let mut decoder = Decoder::new(table_size);
            for round in 0..40 {
                // Cycles through more names than are kept, in changing order.
                let pick: Vec<&String> = (0..3)
                    .map(|i| &names[(round * 3 + i * 5) % names.len()])
                    .collect();
                let fields: Vec<Header<Option<HeaderName>>> = pick
                    .iter()
                    .map(|name| {
                        let mut value = HeaderValue::from_str(&format!("v{round}")).unwrap();
                        value.set_sensitive(sensitive);
                        Header::Field {
                            name: Some(HeaderName::from_bytes(name.as_bytes()).unwrap()),
                            value,
                        }
                    })
                    .collect();
                let mut got = encode(&mut encoder, fields.clone());

                let mut want = BytesMut::new();
                for name in &pick {
                    want.put_u8(if sensitive { 0b10000 } else { 0 });
                    encode_str(name.as_bytes(), &mut want);
                    encode_str(format!("v{round}").as_bytes(), &mut want);
                }
                assert_eq!(got, want, "round {round}, table {table_size}");

                let mut decoded = vec![];
                decoder
                    .decode(&mut Cursor::new(&mut got), |h| {
                        decoded.push(h);
                        ControlFlow::Continue(())
                    })
                    .expect("decodes");
                let sent: Vec<Header> = fields.into_iter().map(|h| h.reify().unwrap()).collect();
                assert_eq!(decoded, sent, "round {round}, table {table_size}");
            }
            let kept = encoder.names.entries.as_deref().expect("names kept");
            assert!(kept
                .iter()
                .all(|e| usize::from(e.name_len) <= NAME_MAX && e.name_len > 0));
        }

        // What is kept is the literal, and only for names that fit.
        let mut encoder = Encoder::default();
        assert!(
            encoder.names.entries.is_none(),
            "allocated with the first name"
        );
        for name in &names {
            let mut value = HeaderValue::from_static("1");
            value.set_sensitive(true);
            let field = Header::Field {
                name: Some(HeaderName::from_bytes(name.as_bytes()).unwrap()),
                value,
            };
            encode(&mut encoder, vec![field]);
            let mut literal = BytesMut::new();
            encode_str(name.as_bytes(), &mut literal);
            if name.starts_with('`') {
                // The boundary is tested, with the codes as they are.
                assert_eq!(
                    literal.len(),
                    LITERAL_MAX + usize::from(name.starts_with(&"`".repeat(22)))
                );
            }
            let fits = name.len() <= NAME_MAX && literal.len() <= LITERAL_MAX;
            assert_eq!(
                encoder.names.get(name.as_bytes()),
                fits.then_some(&literal[..]),
                "{name}"
            );
        }
    }

    #[test]
    fn test_content_length_value_not_indexed() {
        let mut encoder = Encoder::default();
        let res = encode(&mut encoder, vec![header("content-length", "1234")]);

        assert_eq!(&[15, 13, 0x80 | 3], &res[0..3]);
        assert_eq!("1234", huff_decode(&res[3..]));
        assert_eq!(6, res.len());
    }

    #[test]
    fn test_encoding_headers_with_same_name() {
        let mut encoder = Encoder::default();
        let name = "hello";

        // Encode first one
        let _ = encode(&mut encoder, vec![header(name, "one")]);

        // Encode second one
        let res = encode(&mut encoder, vec![header(name, "two")]);
        assert_eq!(&[0x40 | 62, 0x80 | 3], &res[0..2]);
        assert_eq!("two", huff_decode(&res[2..]));
        assert_eq!(5, res.len());

        // Encode the first one again
        let res = encode(&mut encoder, vec![header(name, "one")]);
        assert_eq!(&[0x80 | 63], &res[..]);

        // Now the second one
        let res = encode(&mut encoder, vec![header(name, "two")]);
        assert_eq!(&[0x80 | 62], &res[..]);
    }

    #[test]
    fn test_evicting_headers_when_multiple_of_same_name_are_in_table() {
        // The encoder only has space for 2 headers
        let mut encoder = Encoder::new(76, 0);

        let _ = encode(&mut encoder, vec![header("foo", "bar")]);
        assert_eq!(1, encoder.table.len());

        let _ = encode(&mut encoder, vec![header("bar", "foo")]);
        assert_eq!(2, encoder.table.len());

        // This will evict the first header, while still referencing the header
        // name
        let res = encode(&mut encoder, vec![header("foo", "baz")]);
        assert_eq!(&[0x40 | 63, 0, 0x80 | 3], &res[..3]);
        assert_eq!(2, encoder.table.len());

        // Try adding the same header again
        let res = encode(&mut encoder, vec![header("foo", "baz")]);
        assert_eq!(&[0x80 | 62], &res[..]);
        assert_eq!(2, encoder.table.len());
    }

    #[test]
    fn test_max_size_zero() {
        // Static table only
        let mut encoder = Encoder::new(0, 0);
        let res = encode(&mut encoder, vec![method("GET")]);
        assert_eq!(*res, [0x80 | 2]);
        assert_eq!(encoder.table.len(), 0);

        let res = encode(&mut encoder, vec![header("foo", "bar")]);
        assert_eq!(&[0, 0x80 | 2], &res[..2]);
        assert_eq!("foo", huff_decode(&res[2..4]));
        assert_eq!(0x80 | 3, res[4]);
        assert_eq!("bar", huff_decode(&res[5..8]));
        assert_eq!(0, encoder.table.len());

        // Encode a custom value
        let res = encode(&mut encoder, vec![header("transfer-encoding", "chunked")]);
        assert_eq!(&[15, 42, 0x80 | 6], &res[..3]);
        assert_eq!("chunked", huff_decode(&res[3..]));
    }

    #[test]
    fn test_update_max_size_combos() {
        let mut encoder = Encoder::default();
        assert!(encoder.size_update.is_none());
        assert_eq!(4096, encoder.table.max_size());

        encoder.update_max_size(4096); // Default size
        assert!(encoder.size_update.is_none());

        encoder.update_max_size(0);
        assert_eq!(Some(SizeUpdate::One(0)), encoder.size_update);

        encoder.update_max_size(100);
        assert_eq!(Some(SizeUpdate::Two(0, 100)), encoder.size_update);

        let mut encoder = Encoder::default();
        encoder.set_max_allowed_size(8000);
        encoder.update_max_size(8000);
        assert_eq!(Some(SizeUpdate::One(8000)), encoder.size_update);

        encoder.update_max_size(100);
        assert_eq!(Some(SizeUpdate::One(100)), encoder.size_update);

        encoder.update_max_size(8000);
        assert_eq!(Some(SizeUpdate::Two(100, 8000)), encoder.size_update);

        encoder.update_max_size(4000);
        assert_eq!(Some(SizeUpdate::Two(100, 4000)), encoder.size_update);

        encoder.update_max_size(50);
        assert_eq!(Some(SizeUpdate::One(50)), encoder.size_update);
    }

    #[test]
    fn test_resizing_table() {
        let mut encoder = Encoder::default();

        // Add a header
        let _ = encode(&mut encoder, vec![header("foo", "bar")]);

        encoder.update_max_size(1);
        assert_eq!(1, encoder.table.len());

        let res = encode(&mut encoder, vec![method("GET")]);
        assert_eq!(&[32 | 1, 0x80 | 2], &res[..]);
        assert_eq!(0, encoder.table.len());

        let res = encode(&mut encoder, vec![header("foo", "bar")]);
        assert_eq!(0, res[0]);

        encoder.update_max_size(100);
        let res = encode(&mut encoder, vec![header("foo", "bar")]);
        assert_eq!(&[32 | 31, 69, 64], &res[..3]);

        encoder.update_max_size(0);
        let res = encode(&mut encoder, vec![header("foo", "bar")]);
        assert_eq!(&[32, 0], &res[..2]);
    }

    #[test]
    fn test_decreasing_table_size_without_eviction() {
        let mut encoder = Encoder::default();

        // Add a header
        let _ = encode(&mut encoder, vec![header("foo", "bar")]);

        encoder.update_max_size(100);
        assert_eq!(1, encoder.table.len());

        let res = encode(&mut encoder, vec![header("foo", "bar")]);
        assert_eq!(&[32 | 31, 69, 0x80 | 62], &res[..]);
    }

    #[test]
    fn test_nameless_header() {
        let mut encoder = Encoder::default();

        let res = encode(
            &mut encoder,
            vec![
                Header::Field {
                    name: Some("hello".parse().unwrap()),
                    value: HeaderValue::from_bytes(b"world").unwrap(),
                },
                Header::Field {
                    name: None,
                    value: HeaderValue::from_bytes(b"zomg").unwrap(),
                },
            ],
        );

        assert_eq!(&[0x40, 0x80 | 4], &res[0..2]);
        assert_eq!("hello", huff_decode(&res[2..6]));
        assert_eq!(0x80 | 4, res[6]);
        assert_eq!("world", huff_decode(&res[7..11]));

        // Next is not indexed
        assert_eq!(&[15, 47, 0x80 | 3], &res[11..14]);
        assert_eq!("zomg", huff_decode(&res[14..]));
    }

    #[test]
    fn test_large_size_update() {
        let mut encoder = Encoder::default();
        encoder.set_max_allowed_size(usize::MAX);

        encoder.update_max_size(1912930560);
        assert_eq!(Some(SizeUpdate::One(1912930560)), encoder.size_update);

        let mut dst = BytesMut::with_capacity(6);
        encoder.encode_size_updates(&mut dst);
        assert_eq!([63, 225, 129, 148, 144, 7], &dst[..]);
    }

    #[test]
    fn test_large_size_update_is_capped() {
        let mut encoder = Encoder::new(0, 0);

        encoder.update_max_size(1912930560);
        assert_eq!(
            Some(SizeUpdate::One(DEFAULT_MAX_ALLOWED_SIZE)),
            encoder.size_update
        );

        let mut dst = BytesMut::with_capacity(3);
        encoder.encode_size_updates(&mut dst);
        assert_eq!([63, 225, 31], &dst[..]);
        assert_eq!(DEFAULT_MAX_ALLOWED_SIZE, encoder.table.max_size());
    }

    #[test]
    #[ignore]
    fn test_evicted_overflow() {
        // Not sure what the best way to do this is.
    }

    fn encode(e: &mut Encoder, hdrs: Vec<Header<Option<HeaderName>>>) -> BytesMut {
        let mut dst = BytesMut::with_capacity(1024);
        e.encode(hdrs, &mut dst);
        dst
    }

    fn method(s: &str) -> Header<Option<HeaderName>> {
        Header::Method(Method::from_bytes(s.as_bytes()).unwrap())
    }

    fn header(name: &str, val: &str) -> Header<Option<HeaderName>> {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        let value = HeaderValue::from_bytes(val.as_bytes()).unwrap();

        Header::Field {
            name: Some(name),
            value,
        }
    }

    fn huff_decode(src: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        huffman::decode(src, &mut buf).unwrap()
    }
}
