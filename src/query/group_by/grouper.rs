//! Group ids for the rows of a batch, from the key columns' local codes (dictionary keys,
//! 8-bit values): each distinct combination is looked up once per batch, through a table of
//! combinations while the batches share their dictionaries.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int8Array, Int32Array, RecordBatch, StringArray,
    UInt8Array,
};
use arrow::datatypes::{Int8Type, Int32Type, UInt8Type};

use super::KeyKind;

const NULL_ID: u32 = u32::MAX;
/// A table slot whose group has not been looked up yet.
const UNSET: u32 = u32::MAX;
/// The largest per-batch table of key combinations (entries); past it rows are hashed.
const MAX_TABLE: usize = 1 << 18;

/// Assigns group indices to rows.
///
/// Each key column gives every row a *local code*: the dictionary key (its values' length for
/// null), or the integer value (256 for null). Local codes map to column ids that are stable
/// for the whole run (interned dictionary strings; the value itself for integers), and a tuple
/// of column ids is a group. Combinations of local codes index a table of groups that is kept
/// while the batches share their dictionaries, which Parquet batches of one row group do.
pub(super) struct Grouper {
    columns: Vec<(usize, KeyKind)>,
    strings: Vec<Interner>,
    /// Group indices, hashed by their column ids (which `group_keys` holds): no allocation
    /// per group.
    groups: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Column ids of every group, `columns.len()` per group.
    group_keys: Vec<u32>,
    table: Vec<u32>,
    /// The dictionaries `table` and `local_ids` were built for.
    table_dicts: Vec<Option<ArrayRef>>,
    /// Per column, local code to column id (`UNSET` until needed).
    local_ids: Vec<Vec<u32>>,
    combined: Vec<u32>,
    /// One column's local codes, while they are added into `combined`.
    scratch: Vec<u32>,
    pub(super) indices: Vec<usize>,
    key_buf: Vec<u32>,
}

#[derive(Default)]
struct Interner {
    ids: foldhash::HashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
    bytes: usize,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(s.into());
        self.ids.insert(s.into(), id);
        self.bytes += 2 * s.len() + 48;
        id
    }
}

impl Grouper {
    pub(super) fn new(columns: Vec<(usize, KeyKind)>) -> Self {
        let n = columns.len();
        Grouper {
            columns,
            strings: (0..n).map(|_| Interner::default()).collect(),
            groups: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            group_keys: Vec::new(),
            table: Vec::new(),
            table_dicts: vec![None; n],
            local_ids: vec![Vec::new(); n],
            combined: Vec::new(),
            scratch: Vec::new(),
            indices: Vec::new(),
            key_buf: vec![0; n],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.group_keys.len() / self.columns.len()
    }

    pub(super) fn size(&self) -> usize {
        self.strings.iter().map(|s| s.bytes).sum::<usize>()
            + self.groups.capacity() * 5
            + self.group_keys.capacity() * 4
            + self.table.capacity() * 4
            + self.local_ids.iter().map(|l| l.capacity() * 4).sum::<usize>()
            + (self.combined.capacity() + self.scratch.capacity()) * 4
            + self.indices.capacity() * 8
    }

    /// Sets `indices` to the group index of every row of `batch`.
    pub(super) fn assign(&mut self, batch: &RecordBatch) {
        let rows = batch.num_rows();
        let arrays: Vec<&ArrayRef> = self.columns.iter().map(|&(i, _)| batch.column(i)).collect();

        // Radix of each column's local codes, and whether the cached table still applies.
        let mut radix = Vec::with_capacity(arrays.len());
        let mut same = !self.table.is_empty();
        for (c, (array, &(_, kind))) in arrays.iter().zip(&self.columns).enumerate() {
            let dict = match kind {
                KeyKind::Dictionary => Some(array.as_dictionary::<Int32Type>().values().clone()),
                _ => None,
            };
            radix.push(match (kind, &dict) {
                (KeyKind::Dictionary, Some(values)) => values.len() + 1,
                (KeyKind::Boolean, _) => 3,
                _ => 257,
            });
            let unchanged = match (&dict, &self.table_dicts[c]) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !unchanged {
                same = false;
                self.table_dicts[c] = dict;
            }
        }
        if !same {
            for (ids, &r) in self.local_ids.iter_mut().zip(&radix) {
                ids.clear();
                ids.resize(r, UNSET);
            }
        }
        let product = radix.iter().try_fold(1usize, |p, &r| p.checked_mul(r)).filter(|&p| p <= MAX_TABLE);

        self.indices.clear();
        match product {
            Some(product) => {
                if !same || self.table.len() != product {
                    self.table.clear();
                    self.table.resize(product, UNSET);
                }
                self.combined.clear();
                self.combined.resize(rows, 0);
                let mut stride = 1u32;
                for (c, array) in arrays.iter().enumerate().rev() {
                    local_codes(array, self.columns[c].1, &mut self.scratch);
                    for (o, &code) in self.combined.iter_mut().zip(&self.scratch) {
                        *o += code * stride;
                    }
                    stride *= radix[c] as u32;
                }
                // Buffers leave `self` for the loop so that `resolve` can borrow it.
                let mut table = std::mem::take(&mut self.table);
                let combined = std::mem::take(&mut self.combined);
                self.indices.resize(rows, 0);
                let mut indices = std::mem::take(&mut self.indices);
                for (&code, out) in combined.iter().zip(indices.iter_mut()) {
                    let mut g = table[code as usize];
                    if g == UNSET {
                        let mut rest = code as usize;
                        for c in (0..arrays.len()).rev() {
                            self.key_buf[c] = (rest % radix[c]) as u32;
                            rest /= radix[c];
                        }
                        g = self.resolve(&arrays);
                        table[code as usize] = g;
                    }
                    *out = g as usize;
                }
                (self.table, self.combined, self.indices) = (table, combined, indices);
            }
            None => {
                // Too many combinations for a table: look every row up.
                self.table.clear();
                let codes: Vec<Vec<u32>> = arrays
                    .iter()
                    .zip(&self.columns)
                    .map(|(array, &(_, kind))| {
                        let mut codes = Vec::with_capacity(rows);
                        local_codes(array, kind, &mut codes);
                        codes
                    })
                    .collect();
                for r in 0..rows {
                    for (c, codes) in codes.iter().enumerate() {
                        self.key_buf[c] = codes[r];
                    }
                    let g = self.resolve(&arrays);
                    self.indices.push(g as usize);
                }
            }
        }
    }

    /// The group of the local codes in `key_buf`, created when new.
    fn resolve(&mut self, arrays: &[&ArrayRef]) -> u32 {
        for (c, array) in arrays.iter().enumerate() {
            let local = self.key_buf[c] as usize;
            let mut id = self.local_ids[c][local];
            if id == UNSET {
                id = match self.columns[c].1 {
                    KeyKind::Dictionary => {
                        let values = array.as_dictionary::<Int32Type>().values().as_string::<i32>();
                        if local >= values.len() || values.is_null(local) {
                            NULL_ID
                        } else {
                            self.strings[c].intern(values.value(local))
                        }
                    }
                    KeyKind::Boolean if local == 2 => NULL_ID,
                    _ if local == 256 => NULL_ID,
                    _ => local as u32,
                };
                self.local_ids[c][local] = id;
            }
            self.key_buf[c] = id;
        }
        let n = self.columns.len();
        let (hasher, keys) = (&self.hasher, &self.group_keys);
        let key_of = |g: u32| &keys[g as usize * n..(g as usize + 1) * n];
        let hash = hasher.hash_one(&self.key_buf[..]);
        match self.groups.entry(hash, |&g| key_of(g) == &self.key_buf[..], |&g| hasher.hash_one(key_of(g))) {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(e) => {
                let g = (keys.len() / n) as u32;
                e.insert(g);
                self.group_keys.extend_from_slice(&self.key_buf);
                g
            }
        }
    }

    /// The key columns of every group, in group order, with the input's types.
    pub(super) fn key_columns(&self) -> Vec<ArrayRef> {
        let n = self.columns.len();
        self.columns
            .iter()
            .enumerate()
            .map(|(c, &(_, kind))| {
                let ids = self.group_keys.iter().skip(c).step_by(n).map(|&id| (id != NULL_ID).then_some(id));
                match kind {
                    KeyKind::Dictionary => {
                        let keys: Int32Array = ids.map(|id| id.map(|id| id as i32)).collect();
                        let values = StringArray::from_iter_values(self.strings[c].values.iter());
                        Arc::new(DictionaryArray::<Int32Type>::new(keys, Arc::new(values))) as ArrayRef
                    }
                    KeyKind::UInt8 => Arc::new(ids.map(|id| id.map(|id| id as u8)).collect::<UInt8Array>()),
                    KeyKind::Int8 => {
                        Arc::new(ids.map(|id| id.map(|id| id as u8 as i8)).collect::<Int8Array>())
                    }
                    KeyKind::Boolean => {
                        Arc::new(ids.map(|id| id.map(|id| id == 1)).collect::<BooleanArray>())
                    }
                }
            })
            .collect()
    }
}

/// Sets `codes` to each row's local code in `array`: the dictionary key or the value, and for
/// a null the column's null code (the dictionary's length, 256 for 8-bit integers, 2 for
/// booleans).
fn local_codes(array: &ArrayRef, kind: KeyKind, codes: &mut Vec<u32>) {
    codes.clear();
    let (null_code, nulls) = match kind {
        KeyKind::Dictionary => {
            let dict = array.as_dictionary::<Int32Type>();
            // Keys of null slots may hold anything; they are replaced below.
            codes.extend(dict.keys().values().iter().map(|&k| k as u32));
            (dict.values().len() as u32, dict.keys().nulls())
        }
        KeyKind::UInt8 => {
            codes.extend(array.as_primitive::<UInt8Type>().values().iter().map(|&v| v as u32));
            (256, array.nulls())
        }
        KeyKind::Int8 => {
            codes.extend(array.as_primitive::<Int8Type>().values().iter().map(|&v| v as u8 as u32));
            (256, array.nulls())
        }
        KeyKind::Boolean => {
            codes.extend(array.as_boolean().values().iter().map(u32::from));
            (2, array.nulls())
        }
    };
    if let Some(nulls) = nulls.filter(|n| n.null_count() > 0) {
        for (code, valid) in codes.iter_mut().zip(nulls.iter()) {
            if !valid {
                *code = null_code;
            }
        }
    }
}
