//! A small RE2-style regular expression engine for `pattern` in CRD schemas.
//!
//! Upstream compiles patterns with Go's `regexp` (RE2 syntax, unanchored
//! `MatchString`). This engine covers that syntax (classes, Perl and POSIX
//! classes, groups with flags, counted repetition, anchors, word boundaries)
//! and matches with a Pike VM, so matching time stays linear in the input
//! like RE2's. Parse errors use Go's wording, because the CRD rejection
//! message quotes them.

use thiserror::Error;

/// A pattern that failed to compile, rendered like Go's `*syntax.Error`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("error parsing regexp: {code}: `{expr}`")]
pub struct RegexError {
    code: &'static str,
    expr: String,
}

fn err(code: &'static str, expr: impl Into<String>) -> RegexError {
    RegexError {
        code,
        expr: expr.into(),
    }
}

/// Go's limit on `{n,m}` counts.
const MAX_REPEAT: u32 = 1000;
/// Bound on program size so hostile patterns cannot exhaust memory.
const MAX_PROGRAM: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    LineStart,
    LineEnd,
    TextStart,
    TextEnd,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Debug, Clone)]
struct Class {
    ranges: Vec<(char, char)>,
    negated: bool,
    fold: bool,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let hit = |c: char| self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        let mut found = hit(c);
        if !found && self.fold {
            found = c.to_lowercase().any(hit) || c.to_uppercase().any(hit);
        }
        found != self.negated
    }
}

#[derive(Debug, Clone)]
enum Node {
    Empty,
    Class(Class),
    Any {
        dot_nl: bool,
    },
    Look(Look),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    fold: bool,
    dot_nl: bool,
    multi_line: bool,
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }
    fn offset(&self, pos: usize) -> usize {
        self.chars.get(pos).map_or(self.src.len(), |&(o, _)| o)
    }
    fn rest_from(&self, pos: usize) -> &'a str {
        &self.src[self.offset(pos)..]
    }
    fn slice(&self, from: usize, to: usize) -> &'a str {
        &self.src[self.offset(from)..self.offset(to)]
    }

    /// alternation := concat ('|' concat)*
    fn parse_alt(&mut self, flags: &mut Flags, depth: usize) -> Result<Node, RegexError> {
        let mut alts = vec![self.parse_concat(flags, depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.parse_concat(flags, depth)?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(alts)
        })
    }

    fn parse_concat(&mut self, flags: &mut Flags, depth: usize) -> Result<Node, RegexError> {
        let mut items: Vec<Node> = Vec::new();
        // Whether the last item may take a repetition operator.
        let mut repeatable = false;
        let mut last_was_repeat = false;
        let mut last_op_start = 0usize;
        while let Some(c) = self.peek() {
            match c {
                '|' => break,
                ')' => {
                    if depth == 0 {
                        return Err(err("unexpected )", self.src));
                    }
                    break;
                }
                '*' | '+' | '?' | '{' => {
                    let start = self.pos;
                    let Some((min, max)) = self.parse_repeat_op()? else {
                        // A '{' that is not a valid count is a literal.
                        self.pos = start + 1;
                        items.push(lit('{', flags.fold));
                        repeatable = true;
                        last_was_repeat = false;
                        continue;
                    };
                    let op = self.slice(start, self.pos);
                    if last_was_repeat {
                        return Err(err(
                            "invalid nested repetition operator",
                            self.slice(last_op_start, self.pos),
                        ));
                    }
                    if !repeatable {
                        return Err(err("missing argument to repetition operator", op));
                    }
                    // Non-greedy suffix does not change match/no-match.
                    if self.peek() == Some('?') {
                        self.pos += 1;
                    }
                    last_op_start = start;
                    let node = items.pop().unwrap_or(Node::Empty);
                    items.push(Node::Repeat {
                        node: Box::new(node),
                        min,
                        max,
                    });
                    last_was_repeat = true;
                    continue;
                }
                _ => {}
            }
            last_was_repeat = false;
            self.pos += 1;
            match c {
                '(' => {
                    let open = self.pos - 1;
                    let mut inner = *flags;
                    if self.peek() == Some('?') {
                        // Flag groups and named captures.
                        self.pos += 1;
                        match self.peek() {
                            Some('P') | Some('<') => {
                                if self.peek() == Some('P') {
                                    self.pos += 1;
                                }
                                if self.peek() != Some('<') {
                                    return Err(err(
                                        "invalid or unsupported Perl syntax",
                                        self.slice(open, (self.pos + 1).min(self.chars.len())),
                                    ));
                                }
                                let name_start = self.pos;
                                while let Some(ch) = self.peek() {
                                    self.pos += 1;
                                    if ch == '>' {
                                        break;
                                    }
                                }
                                let name = self.slice(name_start + 1, self.pos.saturating_sub(1));
                                if name.is_empty()
                                    || !name.chars().all(|ch| ch.is_alphanumeric() || ch == '_')
                                {
                                    return Err(err(
                                        "invalid named capture",
                                        self.slice(open, self.pos),
                                    ));
                                }
                            }
                            _ => {
                                let mut neg = false;
                                let mut seen = false;
                                loop {
                                    match self.peek() {
                                        Some('i') => inner.fold = !neg,
                                        Some('s') => inner.dot_nl = !neg,
                                        Some('m') => inner.multi_line = !neg,
                                        Some('U') => {}
                                        Some('-') if !neg => {
                                            neg = true;
                                            seen = false;
                                            self.pos += 1;
                                            continue;
                                        }
                                        Some(')') if seen || !neg => {
                                            // (?flags) applies to the rest of the group.
                                            self.pos += 1;
                                            *flags = inner;
                                            repeatable = false;
                                            break;
                                        }
                                        Some(':') => {
                                            self.pos += 1;
                                            let node = self.parse_alt(&mut inner, depth + 1)?;
                                            if self.peek() != Some(')') {
                                                return Err(err("missing closing )", self.src));
                                            }
                                            self.pos += 1;
                                            items.push(node);
                                            repeatable = true;
                                            break;
                                        }
                                        _ => {
                                            return Err(err(
                                                "invalid or unsupported Perl syntax",
                                                self.slice(
                                                    open,
                                                    (self.pos + 1).min(self.chars.len()),
                                                ),
                                            ))
                                        }
                                    }
                                    seen = true;
                                    self.pos += 1;
                                }
                                continue;
                            }
                        }
                    }
                    let node = self.parse_alt(&mut inner, depth + 1)?;
                    if self.peek() != Some(')') {
                        return Err(err("missing closing )", self.src));
                    }
                    self.pos += 1;
                    items.push(node);
                }
                '[' => items.push(self.parse_class(flags)?),
                '.' => items.push(Node::Any {
                    dot_nl: flags.dot_nl,
                }),
                '^' => items.push(Node::Look(if flags.multi_line {
                    Look::LineStart
                } else {
                    Look::TextStart
                })),
                '$' => items.push(Node::Look(if flags.multi_line {
                    Look::LineEnd
                } else {
                    Look::TextEnd
                })),
                '\\' => items.push(self.parse_escape(flags)?),
                c => items.push(lit(c, flags.fold)),
            }
            repeatable = true;
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        })
    }

    /// Parses `*`, `+`, `?` or `{n}`, `{n,}`, `{n,m}` at the cursor. `None`
    /// means a `{` that does not start a count (Go treats it literally).
    fn parse_repeat_op(&mut self) -> Result<Option<(u32, Option<u32>)>, RegexError> {
        let start = self.pos;
        let c = self.peek();
        self.pos += 1;
        match c {
            Some('*') => return Ok(Some((0, None))),
            Some('+') => return Ok(Some((1, None))),
            Some('?') => return Ok(Some((0, Some(1)))),
            _ => {}
        }
        let num = |p: &mut Self| -> Option<u64> {
            let s = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            if p.pos == s {
                return None;
            }
            p.slice(s, p.pos).parse::<u64>().ok().or(Some(u64::MAX))
        };
        let Some(min) = num(self) else {
            return Ok(None);
        };
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            if self.peek() == Some('}') {
                None
            } else {
                match num(self) {
                    Some(m) => Some(m),
                    None => return Ok(None),
                }
            }
        } else {
            Some(min)
        };
        if self.peek() != Some('}') {
            return Ok(None);
        }
        self.pos += 1;
        let too_big = min > u64::from(MAX_REPEAT)
            || max.is_some_and(|m| m > u64::from(MAX_REPEAT) || m < min);
        if too_big {
            return Err(err("invalid repeat count", self.slice(start, self.pos)));
        }
        // Checked above: both fit in u32.
        Ok(Some((min as u32, max.map(|m| m as u32))))
    }

    fn parse_escape(&mut self, flags: &Flags) -> Result<Node, RegexError> {
        let start = self.pos - 1;
        let Some(c) = self.peek() else {
            return Err(err("trailing backslash at end of expression", ""));
        };
        self.pos += 1;
        let node = match c {
            'b' => Node::Look(Look::WordBoundary),
            'B' => Node::Look(Look::NotWordBoundary),
            'A' => Node::Look(Look::TextStart),
            'z' => Node::Look(Look::TextEnd),
            _ => {
                self.pos = start;
                let cls = self.parse_class_escape(flags.fold)?;
                Node::Class(cls)
            }
        };
        Ok(node)
    }

    /// An escape usable both inside and outside brackets: returns a class.
    fn parse_class_escape(&mut self, fold: bool) -> Result<Class, RegexError> {
        let start = self.pos;
        self.pos += 1; // the backslash
        let Some(c) = self.peek() else {
            return Err(err("trailing backslash at end of expression", ""));
        };
        self.pos += 1;
        let single = |ch: char| Class {
            ranges: vec![(ch, ch)],
            negated: false,
            fold,
        };
        let perl = |ranges: Vec<(char, char)>, negated: bool| Class {
            ranges,
            negated,
            fold: false,
        };
        Ok(match c {
            'd' => perl(DIGIT.to_vec(), false),
            'D' => perl(DIGIT.to_vec(), true),
            's' => perl(SPACE.to_vec(), false),
            'S' => perl(SPACE.to_vec(), true),
            'w' => perl(WORD.to_vec(), false),
            'W' => perl(WORD.to_vec(), true),
            'n' => single('\n'),
            't' => single('\t'),
            'r' => single('\r'),
            'f' => single('\u{c}'),
            'v' => single('\u{b}'),
            'a' => single('\u{7}'),
            'p' | 'P' => {
                let name = if self.peek() == Some('{') {
                    let s = self.pos + 1;
                    while self.peek().is_some_and(|ch| ch != '}') {
                        self.pos += 1;
                    }
                    if self.peek() != Some('}') {
                        return Err(err("invalid character class range", self.rest_from(start)));
                    }
                    let n = self.slice(s, self.pos).to_string();
                    self.pos += 1;
                    n
                } else {
                    let n = self.peek().map(String::from).unwrap_or_default();
                    self.pos += 1;
                    n
                };
                let (ranges, neg) = unicode_class(&name).ok_or_else(|| {
                    err("invalid character class range", self.slice(start, self.pos))
                })?;
                perl(ranges, neg != (c == 'P'))
            }
            'x' => {
                let code = if self.peek() == Some('{') {
                    let s = self.pos + 1;
                    while self.peek().is_some_and(|ch| ch != '}') {
                        self.pos += 1;
                    }
                    let hex = self.slice(s, self.pos).to_string();
                    self.pos += 1;
                    u32::from_str_radix(&hex, 16).ok()
                } else {
                    let s = self.pos;
                    self.pos = (self.pos + 2).min(self.chars.len());
                    u32::from_str_radix(self.slice(s, self.pos), 16).ok()
                };
                match code.and_then(char::from_u32) {
                    Some(ch) => single(ch),
                    None => {
                        return Err(err("invalid escape sequence", self.slice(start, self.pos)))
                    }
                }
            }
            '0'..='7' => {
                // Go accepts octal escapes \0nn and \1-\7 only as octal.
                let s = self.pos - 1;
                while self.pos - s < 3 && self.peek().is_some_and(|ch| ('0'..='7').contains(&ch)) {
                    self.pos += 1;
                }
                let digits = self.slice(s, self.pos);
                if c != '0' && digits.len() == 1 {
                    return Err(err("invalid escape sequence", self.slice(start, self.pos)));
                }
                match u32::from_str_radix(digits, 8).ok().and_then(char::from_u32) {
                    Some(ch) => single(ch),
                    None => {
                        return Err(err("invalid escape sequence", self.slice(start, self.pos)))
                    }
                }
            }
            c if c.is_ascii_punctuation() => single(c),
            _ => return Err(err("invalid escape sequence", self.slice(start, self.pos))),
        })
    }

    fn parse_class(&mut self, flags: &Flags) -> Result<Node, RegexError> {
        let open = self.pos - 1;
        let mut negated = false;
        if self.peek() == Some('^') {
            negated = true;
            self.pos += 1;
        }
        let mut ranges: Vec<(char, char)> = Vec::new();
        let mut classes: Vec<Class> = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(err("missing closing ]", self.rest_from(open)));
            };
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            let item_start = self.pos;
            if c == '[' && self.chars.get(self.pos + 1).map(|&(_, c)| c) == Some(':') {
                let rest = self.rest_from(self.pos);
                if let Some(end) = rest.find(":]") {
                    let name = &rest[2..end];
                    let (neg, name) = match name.strip_prefix('^') {
                        Some(n) => (true, n),
                        None => (false, name),
                    };
                    let Some(r) = posix_class(name) else {
                        return Err(err("invalid character class range", &rest[..end + 2]));
                    };
                    classes.push(Class {
                        ranges: r.to_vec(),
                        negated: neg,
                        fold: false,
                    });
                    self.pos += rest[..end + 2].chars().count();
                    continue;
                }
            }
            let lo = if c == '\\' {
                let cls = self.parse_class_escape(false)?;
                if cls.negated || cls.ranges.len() != 1 || cls.ranges[0].0 != cls.ranges[0].1 {
                    classes.push(cls);
                    continue;
                }
                cls.ranges[0].0
            } else {
                self.pos += 1;
                c
            };
            // A range `lo-hi`, unless '-' is the last character.
            let is_range = self.peek() == Some('-')
                && self.chars.get(self.pos + 1).is_some_and(|&(_, c)| c != ']');
            if is_range {
                self.pos += 1;
                let hi = if self.peek() == Some('\\') {
                    let cls = self.parse_class_escape(false)?;
                    if cls.negated || cls.ranges.len() != 1 || cls.ranges[0].0 != cls.ranges[0].1 {
                        return Err(err(
                            "invalid character class range",
                            self.slice(item_start, self.pos),
                        ));
                    }
                    cls.ranges[0].0
                } else {
                    let Some(h) = self.peek() else {
                        return Err(err("missing closing ]", self.rest_from(open)));
                    };
                    self.pos += 1;
                    h
                };
                if hi < lo {
                    return Err(err(
                        "invalid character class range",
                        self.slice(item_start, self.pos),
                    ));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        // Fold the nested Perl/POSIX classes in as explicit ranges (they are
        // ASCII, or approximated by the set of their complements below).
        let mut simple = true;
        for cls in &classes {
            if cls.negated {
                simple = false;
            } else {
                ranges.extend(cls.ranges.iter().copied());
            }
        }
        if simple {
            return Ok(Node::Class(Class {
                ranges,
                negated,
                fold: flags.fold,
            }));
        }
        // Negated members: build the union as an alternation of classes.
        let mut alts = vec![Node::Class(Class {
            ranges,
            negated: false,
            fold: flags.fold,
        })];
        for cls in classes.into_iter().filter(|c| c.negated) {
            alts.push(Node::Class(cls));
        }
        let union = Node::Alt(alts);
        if negated {
            return Ok(negate_union(union));
        }
        Ok(union)
    }
}

/// `[^a\D]`-style classes are rare. A negated member (`\D`) covers every
/// non-ASCII char, so the complement of the union is a subset of ASCII,
/// which we enumerate.
fn negate_union(union: Node) -> Node {
    let Node::Alt(alts) = union else {
        return union;
    };
    let members: Vec<Class> = alts
        .into_iter()
        .filter_map(|n| match n {
            Node::Class(c) => Some(c),
            _ => None,
        })
        .collect();
    // Enumerate ASCII: a negated member covers all non-ASCII chars anyway.
    let mut ranges = Vec::new();
    for b in 0u8..=127 {
        let ch = char::from(b);
        if !members.iter().any(|m| m.matches(ch)) {
            ranges.push((ch, ch));
        }
    }
    Node::Class(Class {
        ranges,
        negated: false,
        fold: false,
    })
}

fn lit(c: char, fold: bool) -> Node {
    Node::Class(Class {
        ranges: vec![(c, c)],
        negated: false,
        fold,
    })
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const SPACE: &[(char, char)] = &[('\t', '\n'), ('\u{c}', '\r'), (' ', ' ')];
const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];

fn posix_class(name: &str) -> Option<&'static [(char, char)]> {
    Some(match name {
        "alnum" => &[('0', '9'), ('A', 'Z'), ('a', 'z')],
        "alpha" => &[('A', 'Z'), ('a', 'z')],
        "ascii" => &[('\0', '\u{7f}')],
        "blank" => &[('\t', '\t'), (' ', ' ')],
        "cntrl" => &[('\0', '\u{1f}'), ('\u{7f}', '\u{7f}')],
        "digit" => DIGIT,
        "graph" => &[('!', '~')],
        "lower" => &[('a', 'z')],
        "print" => &[(' ', '~')],
        "punct" => &[('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        "space" => &[('\t', '\r'), (' ', ' ')],
        "upper" => &[('A', 'Z')],
        "word" => WORD,
        "xdigit" => &[('0', '9'), ('A', 'F'), ('a', 'f')],
        _ => return None,
    })
}

/// Unicode general categories, approximated with std's char predicates:
/// returned as (ranges, negated) over sampled ranges is impossible, so we
/// special-case the common ones by scanning the BMP once.
fn unicode_class(name: &str) -> Option<(Vec<(char, char)>, bool)> {
    let pred: fn(char) -> bool = match name {
        "L" | "Letter" => char::is_alphabetic,
        "Lu" => char::is_uppercase,
        "Ll" => char::is_lowercase,
        "N" | "Nd" => char::is_numeric,
        "Z" | "Zs" => char::is_whitespace,
        "P" => |c: char| c.is_ascii_punctuation(),
        "S" => |c: char| matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~'),
        "Greek" => |c: char| ('\u{370}'..='\u{3ff}').contains(&c),
        "Latin" => |c: char| c.is_ascii_alphabetic() || ('\u{c0}'..='\u{24f}').contains(&c),
        _ => return None,
    };
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut cur: Option<(char, char)> = None;
    for cp in 0u32..0x3_0000 {
        let Some(ch) = char::from_u32(cp) else {
            continue;
        };
        if pred(ch) {
            cur = match cur {
                Some((lo, hi)) if hi as u32 + 1 == cp => Some((lo, ch)),
                Some(r) => {
                    ranges.push(r);
                    Some((ch, ch))
                }
                None => Some((ch, ch)),
            };
        }
    }
    ranges.extend(cur);
    Some((ranges, false))
}

#[derive(Debug, Clone)]
enum Inst {
    Class(Class),
    Any { dot_nl: bool },
    Look(Look),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Regex {
    prog: Vec<Inst>,
}

impl Regex {
    /// Compiles `pattern` with Go RE2 syntax.
    pub fn new(pattern: &str) -> Result<Regex, RegexError> {
        let mut p = Parser {
            src: pattern,
            chars: pattern.char_indices().collect(),
            pos: 0,
        };
        let mut flags = Flags::default();
        let node = p.parse_alt(&mut flags, 0)?;
        if p.pos < p.chars.len() {
            // Only an unmatched ')' stops the top level early.
            return Err(err("unexpected )", pattern));
        }
        let mut prog = Vec::new();
        compile(&node, &mut prog, pattern)?;
        prog.push(Inst::Match);
        Ok(Regex { prog })
    }

    /// Whether the pattern matches anywhere in `text` (Go `MatchString`).
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let n = self.prog.len();
        let mut clist: Vec<usize> = Vec::with_capacity(n);
        let mut nlist: Vec<usize> = Vec::with_capacity(n);
        let mut seen = vec![usize::MAX; n];
        for pos in 0..=chars.len() {
            let prev = pos.checked_sub(1).and_then(|i| chars.get(i).copied());
            let cur = chars.get(pos).copied();
            // Unanchored search: a new thread starts at every position.
            if self.add(&mut clist, &mut seen, pos, 0, prev, cur) {
                return true;
            }
            let Some(c) = cur else { break };
            nlist.clear();
            let next = chars.get(pos + 1).copied();
            for &pc in &clist {
                let ok = match &self.prog[pc] {
                    Inst::Class(cls) => cls.matches(c),
                    Inst::Any { dot_nl } => *dot_nl || c != '\n',
                    _ => false,
                };
                if ok && self.add(&mut nlist, &mut seen, pos + 1, pc + 1, Some(c), next) {
                    return true;
                }
            }
            std::mem::swap(&mut clist, &mut nlist);
        }
        false
    }

    /// Adds the epsilon closure of `pc` at `pos`; true when it reaches Match.
    fn add(
        &self,
        list: &mut Vec<usize>,
        seen: &mut [usize],
        pos: usize,
        pc: usize,
        prev: Option<char>,
        cur: Option<char>,
    ) -> bool {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if pc >= self.prog.len() || seen[pc] == pos {
                continue;
            }
            seen[pc] = pos;
            match &self.prog[pc] {
                Inst::Match => return true,
                Inst::Jmp(t) => stack.push(*t),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Look(l) => {
                    if look_ok(*l, prev, cur) {
                        stack.push(pc + 1);
                    }
                }
                Inst::Class(_) | Inst::Any { .. } => list.push(pc),
            }
        }
        false
    }
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn look_ok(l: Look, prev: Option<char>, cur: Option<char>) -> bool {
    match l {
        Look::TextStart => prev.is_none(),
        Look::TextEnd => cur.is_none(),
        Look::LineStart => prev.is_none() || prev == Some('\n'),
        Look::LineEnd => cur.is_none() || cur == Some('\n'),
        Look::WordBoundary => is_word(prev) != is_word(cur),
        Look::NotWordBoundary => is_word(prev) == is_word(cur),
    }
}

fn compile(node: &Node, prog: &mut Vec<Inst>, src: &str) -> Result<(), RegexError> {
    if prog.len() > MAX_PROGRAM {
        return Err(err("expression too large", src));
    }
    match node {
        Node::Empty => {}
        Node::Class(c) => prog.push(Inst::Class(c.clone())),
        Node::Any { dot_nl } => prog.push(Inst::Any { dot_nl: *dot_nl }),
        Node::Look(l) => prog.push(Inst::Look(*l)),
        Node::Concat(items) => {
            for n in items {
                compile(n, prog, src)?;
            }
        }
        Node::Alt(alts) => {
            // split L1, next; L1: a; jmp end; next: split ...
            let mut jumps = Vec::new();
            for (i, a) in alts.iter().enumerate() {
                if i + 1 < alts.len() {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    compile(a, prog, src)?;
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let next = prog.len();
                    prog[split] = Inst::Split(split + 1, next);
                } else {
                    compile(a, prog, src)?;
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat { node, min, max } => {
            for _ in 0..*min {
                compile(node, prog, src)?;
            }
            match max {
                None => {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    compile(node, prog, src)?;
                    prog.push(Inst::Jmp(split));
                    let end = prog.len();
                    prog[split] = Inst::Split(split + 1, end);
                }
                Some(max) => {
                    let mut splits = Vec::new();
                    for _ in *min..*max {
                        splits.push(prog.len());
                        prog.push(Inst::Split(prog.len() + 1, 0));
                        compile(node, prog, src)?;
                    }
                    let end = prog.len();
                    for s in splits {
                        prog[s] = Inst::Split(s + 1, end);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p).expect(p).is_match(t)
    }

    #[test]
    fn matches_like_go_regexp() {
        let cron = r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$";
        assert!(m(cron, "* * * * */5"));
        assert!(m(cron, "0 12 * * 1"));
        assert!(!m(cron, "* * * *"));
        assert!(!m(cron, "bad"));
        // Unanchored search, as Go's MatchString.
        assert!(m("b+", "abbbc"));
        assert!(!m("^b", "ab"));
        assert!(m("(?i)^[0-9a-f]{4}$", "AbCd"));
        assert!(m("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "my-name"));
        assert!(!m("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "-x"));
        assert!(m(r"^[[:alpha:]]+\b", "abc def"));
        assert!(m("^(a|bc|)$", ""));
        assert!(m(r"^[^\d]+$", "abc"));
        assert!(!m(r"^[^\d]+$", "a1"));
        assert!(m(r"^\p{L}+$", "héllo"));
        assert!(m("a{2,3}$", "xaaa"));
        assert!(!m("^a{2,3}$", "aaaa"));
        assert!(m("^x{,2}$", "x{,2}"));
        // Pathological for backtracking engines; linear here.
        let evil = "a".repeat(64);
        assert!(!m("^(a+)+$", &(evil + "!")));
    }

    #[test]
    fn errors_use_go_wording() {
        let e = |p: &str| Regex::new(p).unwrap_err().to_string();
        assert_eq!(e("(abc"), "error parsing regexp: missing closing ): `(abc`");
        assert_eq!(e("abc)"), "error parsing regexp: unexpected ): `abc)`");
        assert_eq!(e("[a-z"), "error parsing regexp: missing closing ]: `[a-z`");
        assert_eq!(
            e("*a"),
            "error parsing regexp: missing argument to repetition operator: `*`"
        );
        assert_eq!(
            e("a**"),
            "error parsing regexp: invalid nested repetition operator: `**`"
        );
        assert_eq!(
            e(r"\q"),
            "error parsing regexp: invalid escape sequence: `\\q`"
        );
        assert_eq!(
            e("[z-a]"),
            "error parsing regexp: invalid character class range: `z-a`"
        );
        assert_eq!(
            e("a{1001}"),
            "error parsing regexp: invalid repeat count: `{1001}`"
        );
    }
}
