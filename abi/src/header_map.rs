//! Header maps as guests see them: ordered, lower-case, with pseudo-headers first, plus a log
//! of the edits so that the embedder can apply them to its own header type.

use http::{HeaderName, HeaderValue};

use crate::types::{HostResult, Status};

/// An HTTP/2-style pseudo-header. Envoy shows them in the maps; filters read and rewrite them
/// (`:path` rewrites, `:authority` routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pseudo {
    Authority,
    Path,
    Method,
    Scheme,
    Status,
}

impl Pseudo {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authority => ":authority",
            Self::Path => ":path",
            Self::Method => ":method",
            Self::Scheme => ":scheme",
            Self::Status => ":status",
        }
    }

    fn parse(name: &[u8]) -> Option<Self> {
        Some(match name {
            b":authority" => Self::Authority,
            b":path" => Self::Path,
            b":method" => Self::Method,
            b":scheme" => Self::Scheme,
            b":status" => Self::Status,
            _ => return None,
        })
    }

    /// Checks a value a guest wants to give this pseudo-header, so that what reaches the wire
    /// is always a well-formed request line or status line.
    fn validate(self, value: &[u8]) -> bool {
        match self {
            Self::Path => {
                !value.is_empty()
                    && (value[0] == b'/' || value == b"*")
                    && value.iter().all(|&b| b > 0x20 && b != 0x7f)
            }
            Self::Method => http::Method::from_bytes(value).is_ok(),
            Self::Authority => !value.is_empty() && http::uri::Authority::try_from(value).is_ok(),
            Self::Scheme => value == b"http" || value == b"https",
            // Three digits here; whether the code may be set is `HeaderMap::status_allowed`.
            Self::Status => {
                value.len() == 3 && value.iter().all(u8::is_ascii_digit) && value[0] != b'0'
            }
        }
    }
}

/// A field name: a pseudo-header or a regular header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldName {
    Pseudo(Pseudo),
    Header(HeaderName),
}

impl FieldName {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Pseudo(p) => p.as_str().as_bytes(),
            Self::Header(h) => h.as_str().as_bytes(),
        }
    }
}

/// One change a guest made, in order, for the embedder to replay on its own headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// A value was appended (`proxy_add_header_map_value`).
    Append(HeaderName, HeaderValue),
    /// Every value of the name was replaced by this one (`proxy_replace_header_map_value`).
    Replace(HeaderName, HeaderValue),
    /// Every value of the name was removed.
    Remove(HeaderName),
    /// Every regular header was removed (`proxy_set_header_map_pairs`, followed by Appends).
    Clear,
    /// A pseudo-header got a new value; read it from the map.
    Pseudo(Pseudo),
}

/// Caps on the size of a whole header map that a guest grows one entry at a time
/// (`proxy_add_header_map_value`, `proxy_replace_header_map_value`): without them a filter
/// adding small headers in a loop could make the host forward (and hold) any number of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapCaps {
    /// Most entries, pseudo-headers included.
    pub max_entries: usize,
    /// Most bytes of names plus values ([`HeaderMap::byte_size`]).
    pub max_bytes: usize,
}

/// An ordered multimap of lower-case names to values, as Envoy's header maps.
#[derive(Debug, Clone, Default)]
pub struct HeaderMap {
    entries: Vec<(FieldName, HeaderValue)>,
    edits: Vec<Edit>,
    /// [`HeaderMap::byte_size`], kept up to date: the caps check it on every guest write.
    bytes: usize,
}

fn entry_size(name: &FieldName, value: &HeaderValue) -> usize {
    name.as_bytes().len() + value.len()
}

/// Why a guest's write to a header map was refused.
fn bad() -> Status {
    Status::BadArgument
}

impl HeaderMap {
    pub fn with_capacity(n: usize) -> Self {
        HeaderMap {
            entries: Vec::with_capacity(n),
            edits: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a pseudo-header while capturing the embedder's headers (no edit is recorded).
    pub fn push_pseudo(&mut self, pseudo: Pseudo, value: HeaderValue) {
        let name = FieldName::Pseudo(pseudo);
        self.bytes += entry_size(&name, &value);
        self.entries.push((name, value));
    }

    /// Adds a header while capturing the embedder's headers (no edit is recorded).
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        let name = FieldName::Header(name);
        self.bytes += entry_size(&name, &value);
        self.entries.push((name, value));
    }

    /// Number of entries, pseudo-headers included (the `num_headers` of the callbacks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Envoy's `byteSize()`: the sum of name and value lengths.
    pub fn byte_size(&self) -> usize {
        self.bytes
    }

    fn recount(&mut self) {
        self.bytes = self.entries.iter().map(|(k, v)| entry_size(k, v)).sum();
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&FieldName, &HeaderValue)> + Clone {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// All entries as byte pairs, for the pairs codec.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
    }

    /// The first value of `name` (matched without regard to case, as Envoy lower-cases keys).
    pub fn get(&self, name: &[u8]) -> Option<&HeaderValue> {
        // Names are stored lower-case: a lower-case key (the usual case) compares exactly.
        let found = if name.iter().any(u8::is_ascii_uppercase) {
            self.entries
                .iter()
                .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(name))
        } else {
            self.entries.iter().find(|(k, _)| k.as_bytes() == name)
        };
        found.map(|(_, v)| v)
    }

    /// The value of a pseudo-header.
    pub fn pseudo(&self, pseudo: Pseudo) -> Option<&HeaderValue> {
        self.entries.iter().find_map(|(k, v)| match k {
            FieldName::Pseudo(p) if *p == pseudo => Some(v),
            _ => None,
        })
    }

    /// The edits made since capture (or since [`HeaderMap::take_edits`]).
    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    /// Whether a guest changed the map.
    pub fn is_modified(&self) -> bool {
        !self.edits.is_empty()
    }

    /// Takes the edit log, leaving it empty.
    pub fn take_edits(&mut self) -> Vec<Edit> {
        std::mem::take(&mut self.edits)
    }

    /// `proxy_add_header_map_value`: appends a value; duplicates are allowed. For a
    /// pseudo-header, which has one value, it sets the value.
    pub fn add(&mut self, name: &[u8], value: &[u8], max_bytes: usize) -> HostResult {
        match self.parse_status_checked(name, value, max_bytes)? {
            (FieldName::Pseudo(p), v) => self.set_pseudo(p, v),
            (FieldName::Header(h), v) => {
                self.push(h.clone(), v.clone());
                self.edits.push(Edit::Append(h, v));
            }
        }
        Ok(())
    }

    /// `proxy_replace_header_map_value`: the name gets exactly this one value.
    pub fn replace(&mut self, name: &[u8], value: &[u8], max_bytes: usize) -> HostResult {
        match self.parse_status_checked(name, value, max_bytes)? {
            (FieldName::Pseudo(p), v) => self.set_pseudo(p, v),
            (FieldName::Header(h), v) => {
                let mut seen = false;
                let mut bytes = self.bytes;
                self.entries.retain_mut(|(k, val)| {
                    if !matches!(k, FieldName::Header(n) if *n == h) {
                        return true;
                    }
                    bytes -= entry_size(k, val);
                    if seen {
                        return false;
                    }
                    seen = true;
                    *val = v.clone();
                    bytes += entry_size(k, val);
                    true
                });
                self.bytes = bytes;
                if !seen {
                    self.push(h.clone(), v.clone());
                }
                self.edits.push(Edit::Replace(h, v));
            }
        }
        Ok(())
    }

    /// [`HeaderMap::add`], refused (BadArgument) if it would take the map past `caps`.
    pub fn add_capped(
        &mut self,
        name: &[u8],
        value: &[u8],
        max_bytes: usize,
        caps: MapCaps,
    ) -> HostResult {
        self.check_growth(name, value, false, caps)?;
        self.add(name, value, max_bytes)
    }

    /// [`HeaderMap::replace`], refused (BadArgument) if it would take the map past `caps`.
    pub fn replace_capped(
        &mut self,
        name: &[u8],
        value: &[u8],
        max_bytes: usize,
        caps: MapCaps,
    ) -> HostResult {
        self.check_growth(name, value, true, caps)?;
        self.replace(name, value, max_bytes)
    }

    /// Whether writing `name: value` (replacing the name's values if `replace`, or if it is a
    /// pseudo-header, which has one value) keeps the map within `caps`. An edit that does not
    /// make the map larger is always allowed, so a map that came in over the caps (from the
    /// client or the upstream) can still be changed and shrunk.
    fn check_growth(&self, name: &[u8], value: &[u8], replace: bool, caps: MapCaps) -> HostResult {
        let len = self.len();
        if !replace && name.first() != Some(&b':') {
            // A plain add always grows the map by one entry: refused at once when full, so a
            // guest adding in a loop pays O(1) per refused call.
            if len >= caps.max_entries {
                return Err(bad());
            }
            let bytes = self.byte_size();
            if bytes.saturating_add(name.len()).saturating_add(value.len()) > caps.max_bytes {
                return Err(bad());
            }
            return Ok(());
        }
        let bytes = self.byte_size();
        let added = bytes.saturating_add(name.len()).saturating_add(value.len());
        if len < caps.max_entries && added <= caps.max_bytes {
            // Within the caps even if nothing were replaced: no need to count what would be.
            return Ok(());
        }
        let (mut new_len, mut new_bytes) = (len, bytes);
        if replace || name.first() == Some(&b':') {
            for (k, v) in &self.entries {
                if k.as_bytes().eq_ignore_ascii_case(name) {
                    new_len -= 1;
                    new_bytes -= k.as_bytes().len() + v.len();
                }
            }
        }
        new_len += 1;
        new_bytes = new_bytes
            .saturating_add(name.len())
            .saturating_add(value.len());
        let grows = new_len > len || new_bytes > bytes;
        if grows && (new_len > caps.max_entries || new_bytes > caps.max_bytes) {
            return Err(bad());
        }
        Ok(())
    }

    /// `proxy_remove_header_map_value`: removes every value of the name; a missing name is Ok.
    /// Pseudo-headers cannot be removed: a request without `:path` cannot be forwarded.
    pub fn remove(&mut self, name: &[u8]) -> HostResult {
        if name.first() == Some(&b':') {
            return Err(bad());
        }
        let Ok(h) = HeaderName::from_bytes(name) else {
            // Nothing by an invalid name can be present.
            return Ok(());
        };
        let before = self.entries.len();
        self.entries
            .retain(|(k, _)| !matches!(k, FieldName::Header(n) if *n == h));
        if self.entries.len() != before {
            self.recount();
            self.edits.push(Edit::Remove(h));
        }
        Ok(())
    }

    /// `proxy_set_header_map_pairs`: replaces every regular header. Pseudo-headers given are
    /// set; those left out keep their value. All-or-nothing: one bad entry changes nothing.
    pub fn set_all<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        max_bytes: usize,
    ) -> HostResult {
        let mut parsed = Vec::new();
        for (k, v) in pairs {
            parsed.push(self.parse_status_checked(k, v, max_bytes)?);
        }
        self.entries
            .retain(|(k, _)| matches!(k, FieldName::Pseudo(_)));
        self.recount();
        self.edits.push(Edit::Clear);
        for (name, value) in parsed {
            match name {
                FieldName::Pseudo(p) => self.set_pseudo(p, value),
                FieldName::Header(h) => {
                    self.push(h.clone(), value.clone());
                    self.edits.push(Edit::Append(h, value));
                }
            }
        }
        Ok(())
    }

    /// [`parse_field`], and a `:status` refused unless [`HeaderMap::status_allowed`].
    fn parse_status_checked(
        &self,
        name: &[u8],
        value: &[u8],
        max_bytes: usize,
    ) -> HostResult<(FieldName, HeaderValue)> {
        let field = parse_field(name, value, max_bytes)?;
        if field.0 == FieldName::Pseudo(Pseudo::Status) && !self.status_allowed(&field.1) {
            return Err(bad());
        }
        Ok(field)
    }

    /// Whether a filter may give `:status` this (three-digit) value: a final status, by the
    /// rule local replies follow ([`crate::types::is_final_status`]), or the value it has now.
    /// An informational code (1xx, 101 included) would make the proxy send an interim
    /// response and never a final one; the status of a response that has one already (a
    /// `101 Switching Protocols` upgrade) may be written back unchanged.
    fn status_allowed(&self, value: &HeaderValue) -> bool {
        let code = std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok());
        code.is_some_and(crate::types::is_final_status)
            || self.pseudo(Pseudo::Status) == Some(value)
    }

    fn set_pseudo(&mut self, pseudo: Pseudo, value: HeaderValue) {
        match self
            .entries
            .iter_mut()
            .find(|(k, _)| *k == FieldName::Pseudo(pseudo))
        {
            Some((_, v)) => {
                self.bytes = self.bytes - v.len() + value.len();
                *v = value;
            }
            None => {
                self.bytes += pseudo.as_str().len() + value.len();
                let at = self
                    .entries
                    .iter()
                    .position(|(k, _)| matches!(k, FieldName::Header(_)))
                    .unwrap_or(self.entries.len());
                self.entries.insert(at, (FieldName::Pseudo(pseudo), value));
            }
        }
        self.edits.push(Edit::Pseudo(pseudo));
    }
}

/// Checks a name and value a guest wants to write: a valid lower-cased header name or a known
/// pseudo-header, a value without CR, LF, NUL or other control bytes, within the size cap.
fn parse_field(
    name: &[u8],
    value: &[u8],
    max_bytes: usize,
) -> HostResult<(FieldName, HeaderValue)> {
    if name.len().saturating_add(value.len()) > max_bytes {
        return Err(bad());
    }
    let value = HeaderValue::from_bytes(value).map_err(|_| bad())?;
    if name.first() == Some(&b':') {
        let pseudo = Pseudo::parse(name).ok_or_else(bad)?;
        if !pseudo.validate(value.as_bytes()) {
            return Err(bad());
        }
        return Ok((FieldName::Pseudo(pseudo), value));
    }
    let name = HeaderName::from_bytes(name).map_err(|_| bad())?;
    Ok((FieldName::Header(name), value))
}

#[cfg(test)]
mod tests;
