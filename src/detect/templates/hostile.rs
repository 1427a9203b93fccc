//! What a hostile sender or a damaged file does to the template miner: each test was a
//! problem found by attacking it (masking in quadratic time, a literal `<*>` taken for the
//! wildcard, sweeps that cascade, blank lines, counts, damaged files), kept so it stays fixed.

use std::time::Instant;

use super::miner::{resolve_merges, test_rng};
use super::{Explanation, Match, Miner, MinerConfig, Template, TemplateId, mask};

fn t(id: TemplateId, tokens: &[&str], merged_into: Option<TemplateId>) -> Template {
    Template {
        id,
        tokens: tokens.iter().map(|s| (*s).into()).collect(),
        count: 1,
        first_seen: 0,
        last_seen: 0,
        example: String::new(),
        merged_into,
    }
}

/// Base-26 letters-only word for `i` (a plain word: no digits).
fn word(mut i: usize) -> String {
    let mut s = String::from("w");
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

// ---- 1. masking: a dash-joined chain with no inner dot is rescanned from every run -------

#[test]
fn attack_dash_chain_masks_in_quadratic_time() {
    let rules = mask::MaskRules::default();
    let time = |msg: &str| {
        let t0 = Instant::now();
        let n = mask::masked(msg, rules).len();
        (t0.elapsed().as_secs_f64(), n)
    };
    let mut figures = Vec::new();
    for k in [2_000usize, 4_000, 8_000, 16_000] {
        // `1!-a-a-a-...-a.`: holds a digit (so it is masked) and a dot (so `names` applies), but
        // the dot has nothing after it: `dotted_name_end` walks to the end from every run.
        let hostile = format!("1!{}.", "-a".repeat(k));
        // Ordinary text of the same size.
        let ordinary = "abc 12 ".repeat(hostile.len() / 7);
        let (h, _) = time(&hostile);
        let (o, _) = time(&ordinary);
        println!("{} bytes: hostile {:.4}s ordinary {:.4}s", hostile.len(), h, o);
        figures.push(h);
    }
    // Doubling the size should about double the time; it quadruples.
    let ratio = figures[3] / figures[2];
    assert!(ratio < 3.0, "16k/8k time ratio {ratio:.1}: quadratic in token length ({figures:?})");
}

// ---- 2. sweep: a template that becomes mostly <*> swallows unrelated older templates -----

#[test]
fn attack_literal_wildcard_in_a_message_is_a_wildcard() {
    // The text `<*>` in a message hashes as the wildcard: a sender can write templates that
    // match anything, at any length (values alone collapse into one `<*>`, this does not).
    let mut m = Miner::default();
    m.add("user root logged in", 0);
    m.add("<*> <*> <*> a#", 0);
    m.add("<*> <*> <*> b#", 0);
    assert_eq!(m.get(1).unwrap().pattern(), "user root logged in", "{:?}", m.templates());
}

// ---- 3. explain() disagrees with add() when the sweep keeps an older template ------------

#[test]
fn attack_explain_names_a_template_add_does_not_give() {
    let mut m = Miner::default();
    assert_eq!(m.add("open file alpha now ok", 0), Match::New(1));
    assert_eq!(m.add("open file beta now 5", 0), Match::New(2), "alpha/beta: two statements");
    let line = "open file 7 now ok";
    let why = m.explain(line);
    let got = m.add(line, 0);
    println!("explain: {why}\nadd: {got:?}");
    match why {
        Explanation::Joins { ends_in: id, .. } | Explanation::Matches { id } => {
            assert_eq!(got.id(), id, "{why}")
        }
        other => panic!("{other:?}"),
    }
}

// ---- 4. restore from a damaged / hostile templates.json ---------------------------------

#[test]
fn attack_restored_count_overflows() {
    let mut big = t(1, &["disk", "<*>", "full"], None);
    big.count = u64::MAX;
    let mut m = Miner::restore(MinerConfig::default(), vec![big, t(2, &["disk", "<*>", "empty"], None)]);
    // debug: panics "attempt to add with overflow" (in the daemon's stamp, under the lock);
    // release: wraps to 0.
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.add("disk sda1 full", 0)));
    assert!(got.is_ok(), "count += 1 overflowed");
    assert!(m.get(1).unwrap().count >= u64::MAX - 1);
}

#[test]
fn a_file_missing_a_template_is_refused() {
    // Template 2 lost (a hand-edited or truncated file): restoring past the gap would give the
    // next new statements ids that old events already hold for other statements.
    let saved = vec![t(1, &["disk", "<*>", "full"], None), t(3, &["user", "<*>", "logged", "in"], None)];
    let body = serde_json::to_vec(&serde_json::json!({ "version": 1, "templates": saved })).unwrap();
    let err = super::Shared::decode(&body, "/data/templates.json").unwrap_err().to_string();
    assert!(
        err.contains("/data/templates.json is damaged") && err.contains("id 3 comes where 2 should"),
        "{err}"
    );
}

#[test]
fn attack_resolve_merges_on_a_peer_file_makes_cycles() {
    // table.rs runs resolve_merges on other nodes' templates.json as read (not restored).
    let mut peer = vec![t(1, &["a"], Some(2)), t(2, &["b"], Some(1)), t(3, &["c"], Some(9))];
    resolve_merges(&mut peer);
    let into: Vec<_> = peer.iter().map(|t| (t.id, t.merged_into)).collect();
    println!("{into:?}");
    for t in &peer {
        if let Some(into) = t.merged_into {
            assert!(into < t.id, "template {} merged into {into}: itself, newer or missing", t.id);
        }
    }
}

// ---- 5. memory: a template keeps every token whole ---------------------------------------

#[test]
fn attack_template_size_is_bounded_by_the_frame_not_by_the_miner() {
    let mut m = Miner::default();
    let long = "x".repeat(60_000);
    let id = m.add(&format!("start {long} and {long} end"), 0).id();
    let t = m.get(id).unwrap();
    let bytes: usize = t.tokens.iter().map(|s| s.len()).sum::<usize>() + t.example.len();
    println!("one template holds {bytes} bytes");
    assert!(bytes <= 16 * 1024, "a template holds {bytes} bytes of one message");
}

// ---- 6. time: templates in one leaf, and the sweep over them ------------------------------

#[test]
fn attack_one_line_sweeps_thousands_of_templates_under_the_lock() {
    // One such line takes a fraction of a millisecond, which the other tests running beside
    // this one can stretch many times: the fastest of several tries is what it costs.
    let mut figures = Vec::new();
    for k in [500usize, 1000, 2000] {
        let mut fastest = f64::INFINITY;
        for _ in 0..7 {
            let mut m = Miner::default();
            for i in 0..k {
                m.add(&format!("{} {} end", word(i), word(i + 7919)), 0);
            }
            assert_eq!(m.live(), k);
            m.add("<*> <*> x#", 0);
            let t0 = Instant::now();
            m.add("<*> <*> y#", 0);
            fastest = fastest.min(t0.elapsed().as_secs_f64());
        }
        println!("{k} templates: the sweeping line took {:.1} µs at fastest", fastest * 1e6);
        figures.push(fastest);
    }
    assert!(figures[2] < figures[1] * 3.0, "one line's cost is quadratic in templates: {figures:?}");
}

// ---- 7. empty messages: every blank line after any change is a new template ---------------

#[test]
fn attack_blank_messages_make_a_template_each() {
    let mut m = Miner::default();
    assert_eq!(m.add("", 0), Match::New(1));
    for i in 0..100 {
        // Anything that changes the table in between (a new statement)...
        m.add(&format!("statement {}", word(i)), 0);
        // ...and the next blank line no longer matches template 1: similarity() gives 0/1.
        m.add("   ", 0);
    }
    let blanks = m.templates().iter().filter(|t| t.tokens.is_empty()).count();
    assert_eq!(blanks, 1, "{blanks} templates of no tokens");
}

// ---- 8. a quoted field after a non-field `=` is one unmasked token holding spaces ---------

#[test]
fn attack_quoted_text_becomes_a_constant_token_with_spaces() {
    let toks = mask::masked(r#"(=x="any text the sender likes" done"#, mask::MaskRules::default());
    println!("{toks:?}");
    assert!(toks.iter().all(|t| !t.contains(' ')), "{toks:?}");
}

// ---- 9. counts: a merged template's messages are counted twice in the table ----------------

#[test]
fn attack_merged_counts_are_counted_twice() {
    let mut m = Miner::default();
    for user in ["admin", "guest", "oracle"] {
        m.add(&format!("Invalid user {user} from 10.0.0.1 port 22"), 0);
    }
    let mut rows = m.templates().to_vec();
    resolve_merges(&mut rows);
    // `select sum(count) from templates group by coalesce(merged_into, id)`, as table.rs says.
    let total: u64 = rows.iter().map(|t| t.count).sum();
    assert_eq!(total, 3, "{rows:?}");
}

// ---- 10. restore from random damaged files keeps the invariants ----------------------------

#[test]
fn damaged_files_restore_sanely() {
    let mut rnd = test_rng(0x9E3779B97F4A7C15);
    for _ in 0..2000 {
        let n = 1 + rnd(12);
        let mut file: Vec<Template> = (0..n)
            .map(|i| {
                let id = if rnd(8) == 0 { rnd(15) as u32 } else { i as u32 + 1 };
                let into = match rnd(3) {
                    0 => None,
                    _ => Some(rnd(16) as u32),
                };
                let toks = ["a", "<*>", "b", "c#"];
                let tokens: Vec<&str> = (0..rnd(4)).map(|_| toks[rnd(4)]).collect();
                t(id, &tokens, into)
            })
            .collect();
        if rnd(2) == 0 {
            file.reverse();
        }
        let mut m = Miner::restore(MinerConfig::default(), file);
        for (k, t) in m.templates().iter().enumerate() {
            assert_eq!(t.id as usize, k + 1);
            if let Some(into) = t.merged_into {
                assert!(into >= 1 && into < t.id);
            }
            let c = m.canonical(t.id);
            assert!(m.get(c).unwrap().merged_into.is_none());
        }
        assert_eq!(m.live(), m.templates().iter().filter(|t| t.merged_into.is_none()).count());
        for line in ["a b", "a 1 b", "c# a", "", "a", "b b b"] {
            let id = m.add(line, 0).id();
            assert!(m.get(id).unwrap().merged_into.is_none(), "{line}");
        }
    }
}

#[test]
fn random_bytes_mask_consistently_and_never_panic() {
    use std::hash::BuildHasher;
    let parts = [
        "a", "Z", "1", ".", "-", "_", "/", "=", "\"", " ", "é", "ü.", "ms", "KB", "<*>", "@", ":", ",", ")",
        "x=\"", "GET",
    ];
    let mut rnd = test_rng(0xDEADBEEFCAFE);
    let h = foldhash::fast::RandomState::default();
    let mut tokens = mask::Tokens::default();
    let mut m = Miner::default();
    for _ in 0..30_000 {
        let msg: String = (0..rnd(40)).map(|_| parts[rnd(parts.len())]).collect();
        for _ in 0..2 {
            let r = tokens.append(&msg, &h);
            let got: Vec<u64> = tokens.info()[r].iter().map(|i| i.hash).collect();
            let want: Vec<u64> = mask::masked(&msg, mask::MaskRules::default())
                .iter()
                .map(|s| h.hash_one(s.as_bytes()))
                .collect();
            assert_eq!(got, want, "{msg:?}");
        }
        m.explain(&msg);
        m.add(&msg, 0);
    }
}
