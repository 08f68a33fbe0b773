//! Unified social credit codes (GB 32100-2015).
//!
//! 18 characters over 31 symbols (digits and upper-case letters without
//! I, O, Z, S, V): registration authority, entity type, the GB/T 2260 code
//! of the registering authority's area, a 9-character organization code
//! (GB 11714, itself ending in a check character) and a final check
//! character. A credit code is public, so messages may quote it.

/// The code's alphabet; a character's value is its index.
pub const ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Weights of positions 1..=17: 3^(i-1) mod 31.
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// Weights of the organization code's first eight characters (GB 11714).
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

/// Value of a character in the credit code's alphabet.
fn value(c: char) -> Option<u32> {
    ALPHABET.find(c).map(|i| i as u32)
}

/// Value of a character in GB 11714 (digits 0-9, letters A=10 .. Z=35).
fn org_value(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        'A'..='Z' => Some(c as u32 - 'A' as u32 + 10),
        _ => None,
    }
}

/// The GB 11714 check character of an organization code's first eight
/// characters.
pub fn org_check_char(first8: &str) -> Option<char> {
    if first8.chars().count() != 8 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in first8.chars().zip(ORG_WEIGHTS) {
        sum += org_value(c)? * w;
    }
    Some(match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        n => char::from(b'0' + n as u8),
    })
}

/// The check character (position 18) of a code's first 17 characters, or
/// `None` if they are not 17 characters of the alphabet.
pub fn check_char(first17: &str) -> Option<char> {
    if first17.chars().count() != 17 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in first17.chars().zip(WEIGHTS) {
        sum += value(c)? * w;
    }
    let v = (31 - sum % 31) % 31;
    ALPHABET.chars().nth(v as usize)
}

/// Checks a credit code; the reason names the first problem found.
pub fn validate(code: &str) -> Result<(), String> {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() != 18 {
        return Err(format!(
            "credit code {code:?} must be 18 characters, not {}",
            chars.len()
        ));
    }
    if let Some(i) = chars.iter().position(|&c| value(c).is_none()) {
        return Err(format!(
            "credit code {code:?} has a bad character {:?} at position {} (allowed: 0-9 and A-Y without I, O, S, V, Z)",
            chars[i],
            i + 1
        ));
    }
    if let Some(i) = chars[2..8].iter().position(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "credit code {code:?} must have a GB/T 2260 area code (digits) at positions 3-8; position {} is not a digit",
            i + 3
        ));
    }
    let org8: String = chars[8..16].iter().collect();
    let org_check = org_check_char(&org8).unwrap_or('?');
    if chars[16] != org_check {
        return Err(format!(
            "credit code {code:?}: organization code check character is wrong (position 17 is {:?}, expected {org_check:?})",
            chars[16]
        ));
    }
    let first17: String = chars[..17].iter().collect();
    let check = check_char(&first17).unwrap_or('?');
    if chars[17] != check {
        return Err(format!(
            "credit code {code:?}: check character is wrong ({:?}, expected {check:?})",
            chars[17]
        ));
    }
    Ok(())
}

/// Builds a code from the registration authority (`9` for market
/// regulation), the entity type (`1` for an enterprise), a six-digit area
/// code and the organization code's first eight characters, adding both
/// check characters. Inputs outside the alphabet give a code that
/// [`validate`] rejects.
pub fn make(reg: char, kind: char, district: &str, org8: &str) -> String {
    let mut code = String::with_capacity(18);
    code.push(reg);
    code.push(kind);
    code.push_str(district);
    code.push_str(org8);
    code.push(org_check_char(org8).unwrap_or('?'));
    let check = check_char(&code).unwrap_or('?');
    code.push(check);
    code
}

/// The six-digit area code inside a credit code (positions 3-8).
pub fn area_code(code: &str) -> Option<&str> {
    code.get(2..8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_validate() {
        // Check characters worked by hand from the weight tables:
        // org "12345678": 3+14+27+40+25+48+28+16 = 201, 201 mod 11 = 3, 11-3 = 8.
        assert_eq!(org_check_char("12345678"), Some('8'));
        let code = make('9', '1', "310115", "12345678");
        assert_eq!(&code[..17], "91310115123456788");
        assert_eq!(validate(&code), Ok(()));
        // Letters in the organization code, as in post-2015 "MA" codes.
        let code = make('9', '1', "320583", "MA1MXY3K");
        assert_eq!(validate(&code), Ok(()));
    }

    #[test]
    fn published_codes_validate() {
        // Real codes as published in registers and examples, one with an
        // organization check character X.
        for code in ["91350100M000100Y43", "9144030071526726XG", "91110000802100433B"] {
            assert_eq!(validate(code), Ok(()), "{code}");
        }
    }

    #[test]
    fn org_check_maps_ten_and_eleven() {
        // Search small bodies for both special cases and check them.
        let mut seen_x = false;
        let mut seen_0 = false;
        for n in 0..200u32 {
            let body = format!("{n:08}");
            let sum: u32 = body
                .chars()
                .zip(ORG_WEIGHTS)
                .map(|(c, w)| org_value(c).unwrap() * w)
                .sum();
            let c = org_check_char(&body).unwrap();
            match 11 - sum % 11 {
                10 => {
                    assert_eq!(c, 'X');
                    seen_x = true;
                }
                11 => {
                    assert_eq!(c, '0');
                    seen_0 = true;
                }
                _ => {}
            }
        }
        assert!(seen_x && seen_0);
    }

    #[test]
    fn problems_are_named() {
        let good = make('9', '1', "330106", "MA27WX9B");
        assert!(validate(&good[..17]).unwrap_err().contains("18 characters"));
        let bad_char = format!("{}I{}", &good[..4], &good[5..]);
        assert!(validate(&bad_char).unwrap_err().contains("position 5"));
        let mut org_wrong: Vec<char> = good.chars().collect();
        org_wrong[16] = if org_wrong[16] == '1' { '2' } else { '1' };
        let org_wrong: String = org_wrong.into_iter().collect();
        assert!(
            validate(&org_wrong)
                .unwrap_err()
                .contains("organization code check character")
        );
        let mut wrong: Vec<char> = good.chars().collect();
        wrong[17] = if wrong[17] == 'A' { 'B' } else { 'A' };
        let wrong: String = wrong.into_iter().collect();
        let reason = validate(&wrong).unwrap_err();
        assert!(
            reason.contains("check character is wrong")
                && reason.contains(&format!("{:?}", good.chars().last().unwrap())),
            "{reason}"
        );
    }

    #[test]
    fn check_char_needs_seventeen_alphabet_chars() {
        assert_eq!(check_char("9131011512345678"), None);
        assert_eq!(check_char("9131011512345678I"), None);
        // All zeros: sum 0, so (31 - 0) mod 31 = 0.
        assert_eq!(check_char("00000000000000000"), Some('0'));
        // "1" then zeros: sum 1, 31 - 1 = 30 -> 'Y'.
        assert_eq!(check_char("10000000000000000"), Some('Y'));
    }
}
