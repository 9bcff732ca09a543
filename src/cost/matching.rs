//! Model name → price entry. Pure and allocation-light: this runs per request.
//!
//! Order, for each name (the response's model first, the requested one second):
//! 1. exact name (case-insensitive) in the provider chain,
//! 2. explicit rules (globs, longest first) in the chain,
//! 3. normalised names (provider/ prefix, `@date`, `-latest`, date suffixes,
//!    then `4.5` → `4-5`), exact then rules, in the chain.
//!
//! The chain is the route's provider, then its configured fallbacks, then (for
//! `by_maker` providers such as openrouter) the maker named by the `maker/`
//! prefix. Exact matches are tried across the whole chain before any
//! normalisation because a dated entry in a fallback provider is more precise
//! than the undated entry of the route's provider: azure
//! `gpt-4o-2024-05-13` must get openai's `gpt-4o-2024-05-13` ($5/$15), not
//! azure's `gpt-4o` ($2.50/$10).

use super::table::ProviderIndex;
use super::{ModelPrice, PriceTable};

/// How the provider of a hit was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    Route,
    Fallback { from: String },
    Maker { maker: String, from: Option<String> },
    Search,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum How {
    Exact,
    Rule {
        pattern: String,
        file: String,
        line: usize,
    },
}

/// A resolved match; explanation strings are only rendered by `lookup`.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) entry: usize,
    provider: String,
    via: Via,
    /// The (lowercase) name that matched and how it was derived from the input.
    matched_name: String,
    steps: Vec<&'static str>,
    how: How,
}

/// `*` matches any run of characters (including none); everything else is literal.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Strips one date-like suffix: `-2024-08-06`, `-20250929`.
fn strip_date(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    if b.len() > 11 {
        let (head, tail) = name.split_at(name.len() - 11);
        let t = tail.as_bytes();
        if t[0] == b'-'
            && t[5] == b'-'
            && t[8] == b'-'
            && tail.starts_with("-20")
            && all_digits(&tail[1..5])
            && all_digits(&tail[6..8])
            && all_digits(&tail[9..11])
        {
            return Some(head);
        }
    }
    if b.len() > 9 {
        let (head, tail) = name.split_at(name.len() - 9);
        if tail.starts_with("-20") && all_digits(&tail[1..]) {
            return Some(head);
        }
    }
    None
}

/// Progressively normalised forms of `name`, each with the steps that produced it.
pub(crate) fn normalised(name: &str) -> Vec<(String, Vec<&'static str>)> {
    let mut out = Vec::new();
    let mut steps = Vec::new();
    let mut cur: &str = name;
    if let Some(i) = cur.rfind('/') {
        cur = &cur[i + 1..];
        steps.push("stripped provider/ prefix");
        out.push((cur.to_string(), steps.clone()));
    }
    loop {
        let at_version = cur.rsplit_once('@').filter(|(_, v)| all_digits(v));
        let next = if let Some((head, _)) = at_version {
            Some((head, "stripped @version"))
        } else if let Some(head) = cur
            .strip_suffix("-latest")
            .or_else(|| cur.strip_suffix(":latest"))
        {
            Some((head, "stripped -latest"))
        } else {
            strip_date(cur).map(|head| (head, "stripped date suffix"))
        };
        match next {
            Some((head, step)) if !head.is_empty() => {
                cur = head;
                steps.push(step);
                out.push((cur.to_string(), steps.clone()));
            }
            _ => break,
        }
    }
    // OpenRouter and others write versions with dots (claude-sonnet-4.5) where the
    // maker uses dashes (claude-sonnet-4-5); tried last since it is the loosest.
    let b = cur.as_bytes();
    let dashed: String = cur
        .char_indices()
        .map(|(i, c)| {
            let between_digits = c == '.'
                && i > 0
                && b[i - 1].is_ascii_digit()
                && b.get(i + 1).is_some_and(|n| n.is_ascii_digit());
            if between_digits {
                '-'
            } else {
                c
            }
        })
        .collect();
    if dashed != cur {
        steps.push("version dots to dashes");
        out.push((dashed, steps));
    }
    out
}

fn find_rule<'a>(index: &'a ProviderIndex, name: &str) -> Option<&'a super::table::IndexedRule> {
    index.rules.iter().find(|r| glob_match(&r.pattern, name))
}

impl PriceTable {
    /// The provider chain for `name` (lowercase), see the module comment.
    fn chain<'a>(&'a self, provider: Option<&str>, name: &'a str) -> Vec<(&'a str, &'a str, Via)> {
        let mut chain: Vec<(&str, &str, Via)> = Vec::new();
        let maker_hop = |from: Option<String>, chain: &mut Vec<(&'a str, &'a str, Via)>| {
            if let Some((maker, rest)) = name.split_once('/') {
                let target = self.makers.get(maker).map_or(maker, String::as_str);
                if let Some((key, _)) = self.providers.get_key_value(target) {
                    if !rest.is_empty() {
                        chain.push((
                            key.as_str(),
                            rest,
                            Via::Maker {
                                maker: maker.to_string(),
                                from,
                            },
                        ));
                    }
                }
            }
        };
        match provider {
            Some(p) => {
                let p = p.to_ascii_lowercase();
                let Some((key, index)) = self.providers.get_key_value(p.as_str()) else {
                    return chain;
                };
                chain.push((key.as_str(), name, Via::Route));
                for fb in &index.fallback {
                    chain.push((fb.as_str(), name, Via::Fallback { from: key.clone() }));
                }
                if index.by_maker {
                    maker_hop(Some(key.clone()), &mut chain);
                }
            }
            None => {
                maker_hop(None, &mut chain);
                let mut rest: Vec<&String> = self
                    .providers
                    .keys()
                    .filter(|k| !self.provider_order.contains(k))
                    .collect();
                rest.sort();
                for p in self.provider_order.iter().chain(rest) {
                    if self.providers.contains_key(p) {
                        chain.push((p.as_str(), name, Via::Search));
                    }
                }
            }
        }
        chain
    }

    /// Resolves `model` to an entry; `None` when nothing matches (unpriced).
    pub(crate) fn resolve(&self, provider: Option<&str>, model: &str) -> Option<Hit> {
        let name = model.trim().to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        let chain = self.chain(provider, &name);
        let hit = |p: &str, via: &Via, matched: &str, steps: Vec<&'static str>, entry, how| Hit {
            entry,
            provider: p.to_string(),
            via: via.clone(),
            matched_name: matched.to_string(),
            steps,
            how,
        };
        for (p, n, via) in &chain {
            if let Some(&e) = self.providers.get(*p).and_then(|i| i.exact.get(*n)) {
                return Some(hit(p, via, n, Vec::new(), e, How::Exact));
            }
        }
        for (p, n, via) in &chain {
            if let Some(r) = self.providers.get(*p).and_then(|i| find_rule(i, n)) {
                let how = How::Rule {
                    pattern: r.pattern.clone(),
                    file: r.file.clone(),
                    line: r.line,
                };
                return Some(hit(p, via, n, Vec::new(), r.target, how));
            }
        }
        for (p, n, via) in &chain {
            let Some(index) = self.providers.get(*p) else {
                continue;
            };
            for (cand, steps) in normalised(n) {
                if let Some(&e) = index.exact.get(&cand) {
                    return Some(hit(p, via, &cand, steps, e, How::Exact));
                }
                if let Some(r) = find_rule(index, &cand) {
                    let how = How::Rule {
                        pattern: r.pattern.clone(),
                        file: r.file.clone(),
                        line: r.line,
                    };
                    return Some(hit(p, via, &cand, steps, r.target, how));
                }
            }
        }
        None
    }
}

impl Hit {
    pub(crate) fn explain(&self, input: &str, entry: &ModelPrice) -> String {
        let mut s = match &self.how {
            How::Exact => format!(
                "exact match {:?} in {} (entry {})",
                self.matched_name,
                self.provider,
                entry.key()
            ),
            How::Rule {
                pattern,
                file,
                line,
            } => format!(
                "rule {pattern:?} ({file}:{line}) matched {:?} in {} → entry {}",
                self.matched_name,
                self.provider,
                entry.key()
            ),
        };
        if !self.steps.is_empty() {
            s.push_str(&format!(
                ", after normalising {input:?} → {:?} ({})",
                self.matched_name,
                self.steps.join(", ")
            ));
        }
        match &self.via {
            Via::Route => {}
            Via::Fallback { from } => {
                s.push_str(&format!(", via fallback: {from} had no match"));
            }
            Via::Maker {
                maker,
                from: Some(from),
            } => s.push_str(&format!(
                ", via the maker prefix {maker:?}: {from} had no match"
            )),
            Via::Maker { maker, from: None } => {
                s.push_str(&format!(", provider taken from the maker prefix {maker:?}"))
            }
            Via::Search => s.push_str(", no provider given: searched by provider_order"),
        }
        s
    }
}
