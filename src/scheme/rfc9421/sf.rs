//! RFC 8941 Structured Field values: the subset HTTP message signatures use
//! (dictionaries of inner lists and items with parameters), parsed and serialised.
//! Pure syntax: it knows nothing of signatures or deny codes.

use crate::scheme::canonical;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bare {
    Integer(i64),
    /// Kept as written; signatures never carry decimals in practice.
    Decimal(String),
    Str(String),
    Token(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

pub type Params = Vec<(String, Bare)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub bare: Bare,
    pub params: Params,
}

impl Item {
    pub fn param(&self, key: &str) -> Option<&Bare> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    Item(Item),
    /// An inner list with its parameters and its exact text in the header.
    Inner {
        items: Vec<Item>,
        params: Params,
        raw: String,
    },
}

struct Parser<'a> {
    src: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.i += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        self.src.get(start..self.i).map(str::to_owned)
    }

    fn params(&mut self) -> Option<Params> {
        let mut out: Params = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let k = self.key()?;
            let v = if self.eat(b'=') {
                self.bare()?
            } else {
                Bare::Bool(true)
            };
            match out.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k, v)),
            }
        }
        Some(out)
    }

    fn item(&mut self) -> Option<Item> {
        let bare = self.bare()?;
        let params = self.params()?;
        Some(Item { bare, params })
    }

    fn bare(&mut self) -> Option<Bare> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.bytes(),
            b'?' => {
                self.i += 1;
                let v = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.i += 1;
                Some(Bare::Bool(v))
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'*' => self.token(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Bare> {
        let start = self.i;
        self.eat(b'-');
        let digits_start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let int_len = self.i - digits_start;
        if int_len == 0 {
            return None;
        }
        if self.eat(b'.') {
            let frac_start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let frac = self.i - frac_start;
            if int_len > 12 || frac == 0 || frac > 3 {
                return None;
            }
            return self
                .src
                .get(start..self.i)
                .map(|s| Bare::Decimal(s.to_owned()));
        }
        if int_len > 15 {
            return None;
        }
        self.src.get(start..self.i)?.parse().ok().map(Bare::Integer)
    }

    fn string(&mut self) -> Option<Bare> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'\\' => {
                    let e = self.peek()?;
                    if e != b'"' && e != b'\\' {
                        return None;
                    }
                    out.push(char::from(e));
                    self.i += 1;
                }
                b'"' => return Some(Bare::Str(out)),
                0x20..=0x7e => out.push(char::from(b)),
                _ => return None,
            }
        }
    }

    fn token(&mut self) -> Option<Bare> {
        let start = self.i;
        self.i += 1;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(&b);
            if !ok {
                break;
            }
            self.i += 1;
        }
        self.src
            .get(start..self.i)
            .map(|s| Bare::Token(s.to_owned()))
    }

    fn bytes(&mut self) -> Option<Bare> {
        self.i += 1;
        let start = self.i;
        while let Some(b) = self.peek() {
            if b == b':' {
                let text = self.src.get(start..self.i)?;
                self.i += 1;
                if !text
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
                {
                    return None;
                }
                return canonical::b64_decode(text).map(Bare::Bytes);
            }
            self.i += 1;
        }
        None
    }

    fn inner(&mut self) -> Option<(Vec<Item>, Params)> {
        if !self.eat(b'(') {
            return None;
        }
        let mut items = Vec::new();
        loop {
            self.skip_sp();
            if self.eat(b')') {
                let params = self.params()?;
                return Some((items, params));
            }
            items.push(self.item()?);
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }
}

/// Parses a dictionary field value. `None` if it is not valid RFC 8941 or a key
/// repeats.
pub fn parse_dictionary(src: &str) -> Option<Vec<(String, Member)>> {
    let src = src.trim_matches(' ');
    let mut p = Parser {
        src,
        s: src.as_bytes(),
        i: 0,
    };
    let mut out: Vec<(String, Member)> = Vec::new();
    if src.is_empty() {
        return Some(out);
    }
    loop {
        let key = p.key()?;
        let member = if p.eat(b'=') {
            if p.peek() == Some(b'(') {
                let start = p.i;
                let (items, params) = p.inner()?;
                let raw = src.get(start..p.i)?.to_owned();
                Member::Inner { items, params, raw }
            } else {
                Member::Item(p.item()?)
            }
        } else {
            Member::Item(Item {
                bare: Bare::Bool(true),
                params: p.params()?,
            })
        };
        if out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        out.push((key, member));
        p.skip_ows();
        if p.peek().is_none() {
            return Some(out);
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip_ows();
        p.peek()?;
    }
}

pub fn serialize_bare(out: &mut String, b: &Bare) {
    match b {
        Bare::Integer(i) => out.push_str(&i.to_string()),
        Bare::Decimal(d) => out.push_str(d),
        Bare::Str(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Bare::Token(t) => out.push_str(t),
        Bare::Bytes(v) => {
            out.push(':');
            out.push_str(&canonical::b64_encode(v));
            out.push(':');
        }
        Bare::Bool(v) => out.push_str(if *v { "?1" } else { "?0" }),
    }
}

pub fn serialize_params(out: &mut String, params: &Params) {
    for (k, v) in params {
        out.push(';');
        out.push_str(k);
        if *v != Bare::Bool(true) {
            out.push('=');
            serialize_bare(out, v);
        }
    }
}

pub fn serialize_item(out: &mut String, item: &Item) {
    serialize_bare(out, &item.bare);
    serialize_params(out, &item.params);
}

pub fn serialize_inner(items: &[Item], params: &Params) -> String {
    let mut s = String::from("(");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        serialize_item(&mut s, it);
    }
    s.push(')');
    serialize_params(&mut s, params);
    s
}
