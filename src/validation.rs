//! The one validation of what people type and what providers claim: addresses, names and
//! passwords, the same for registration, sign-in, reset, the admin's CLI and accounts made
//! by an OpenID provider.

use std::collections::BTreeMap;

pub const MAX_EMAIL_LEN: usize = 254;
pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
pub const MAX_NAME_CHARS: usize = 100;

/// Trimmed and lowercased, with an international domain in its ASCII (punycode) form after
/// UTS 46 mapping, so that one mailbox written as `ann@bücher.example`, as
/// `ann@xn--bcher-kva.example` or with fullwidth letters in its domain is one account.
pub fn normalize_email(email: &str) -> String {
    let email = email.trim().to_lowercase();
    match email.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => match idna::domain_to_ascii(domain) {
            Ok(ascii) if !ascii.is_empty() => format!("{local}@{ascii}"),
            _ => email,
        },
        _ => email,
    }
}

/// Characters that change how text is displayed without being seen: bidirectional overrides
/// and isolates, zero-width characters, joiners, invisible operators, the byte-order mark,
/// soft hyphens and tag characters. In a name they make one look like another.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// A local part as RFC 5321 writes it without quotes (a "dot-atom"), in ASCII: letters,
/// digits and ``!#$%&'*+-/=?^_`{|}~``, dots between them. No quoting, no comments, no
/// `<`/`>` (so `x<victim@mail.example>` is not an address), no Unicode (so no lookalikes of
/// another mailbox, fullwidth or from another script).
fn local_part_ok(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
}

/// A domain in its ASCII form: two or more dot-separated labels of letters, digits and
/// hyphens (not at a label's ends), each at most 63 characters, no trailing dot.
fn domain_ok(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What is wrong with a normalised address, if anything. Delivery is the only real test of an
/// address; this keeps out what cannot be one, or could be mistaken for another.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.is_empty() {
        return Some("Enter an email address.");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Some("Email must be at most 254 characters.");
    }
    let well_formed = match email.rsplit_once('@') {
        Some((local, domain)) => local_part_ok(local) && domain_ok(domain),
        None => false,
    };
    (!well_formed).then_some("Enter a valid email address.")
}

/// Whether `email` (normalised) could be an address stored by this or an earlier version of
/// latchkey, whose rules were looser: what sign-in looks up. The strict rules above are for
/// addresses being stored; an account made under the old ones must still sign in.
pub fn may_be_stored(email: &str) -> bool {
    email.len() <= MAX_EMAIL_LEN && email.contains('@') && !email.chars().any(|c| c.is_control())
}

pub fn password_problem(password: &str) -> Option<&'static str> {
    if password.len() < MIN_PASSWORD_BYTES {
        Some("Password must be at least 8 characters.")
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some("Password must be at most 1024 bytes.")
    } else {
        None
    }
}

/// What is wrong with a trimmed name, if anything.
pub fn name_problem(name: &str) -> Option<&'static str> {
    let length = name.chars().count();
    if length == 0 {
        Some("Enter a name.")
    } else if length > MAX_NAME_CHARS {
        Some("Name must be at most 100 characters.")
    } else if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        Some("Name must not contain control, invisible or text-direction characters.")
    } else {
        None
    }
}

/// 422 `validation_failed` naming each field that has a problem, or nothing.
/// Fields that are not valid, each with what to fix: 422 `validation_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub BTreeMap<&'static str, &'static str>);

/// Every field with a problem, or `Ok` when there is none.
pub fn check_fields(problems: &[(&'static str, Option<&'static str>)]) -> Result<(), Invalid> {
    let fields: BTreeMap<&'static str, &'static str> = problems
        .iter()
        .filter_map(|(field, problem)| problem.map(|p| (*field, p)))
        .collect();
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Invalid(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "o'brien@example.ie",
            "ann@xn--bcher-kva.example",
        ] {
            assert_eq!(email_problem(good), None, "{good}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "@b.co",
            "a@b",
            "a@.b.co",
            "a@b.co.",
            "a b@c.de",
            "a@b@c.de",
            "a\0@b.co",
            "a\u{202E}b@c.de",
            "x<victim@mail.example>",
            "ann <ann@example.com>",
            "\"a b\"@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a\u{200B}@example.com",
            "\u{FF41}nn@example.com",
            "\u{0430}nn@example.com",
            "a@exa_mple.com",
            "a@-example.com",
            long.as_str(),
        ] {
            assert!(email_problem(&normalize_email(bad)).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn international_domains_have_one_form() {
        assert_eq!(
            normalize_email(" Ann@Bücher.Example "),
            "ann@xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_email("ann@xn--bcher-kva.example"),
            "ann@xn--bcher-kva.example"
        );
        // Fullwidth letters and dots in the domain map to the ASCII domain.
        assert_eq!(
            normalize_email("ann@\u{FF45}xample\u{FF0E}com"),
            "ann@example.com"
        );
    }

    #[test]
    fn accounts_made_under_older_rules_are_still_looked_up() {
        for old in ["jörg@example.de", "a..b@x.example", "u@my_host.example"] {
            assert!(email_problem(old).is_some(), "{old}");
            assert!(may_be_stored(old), "{old}");
        }
        assert!(!may_be_stored("no-at-sign"));
        assert!(!may_be_stored("a\0@b.example"));
    }

    #[test]
    fn names() {
        assert_eq!(name_problem("Ann O'Brien"), None);
        assert_eq!(name_problem("Jörg Müller"), None);
        for bad in [
            "",
            "Ann\u{202E}txt.exe",
            "A\u{200B}nn",
            "Ann\u{2066}",
            "a\nb",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
