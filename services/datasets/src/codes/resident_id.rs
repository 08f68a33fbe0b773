//! Resident identity numbers (GB 11643-1999).
//!
//! ID numbers are secret: no message produced here contains the number or
//! any part of it, so that a rejected row can be reported safely.

use time::{Date, Month};

/// Weights of positions 1..=17: 2^(17-i) mod 11.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Earliest birth year accepted; older dates are typing errors.
const MIN_BIRTH_YEAR: u32 = 1900;

/// The check character of the first 17 digits, or `None` if they are not
/// 17 ASCII digits.
pub fn check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b.iter().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    Some(match (12 - sum % 11) % 11 {
        10 => 'X',
        n => char::from(b'0' + n as u8),
    })
}

/// Checks an ID number. The reason never quotes the number.
pub fn validate(id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    if b.len() != 18 {
        return Err("ID number must be 18 characters".into());
    }
    if !b[..17].iter().all(u8::is_ascii_digit) {
        return Err("ID number must start with 17 digits".into());
    }
    if !(b[17].is_ascii_digit() || b[17] == b'X') {
        return Err("ID number must end in a digit or an upper-case X".into());
    }
    if &b[..2] == b"00" {
        return Err("ID number's address code is not a valid area code".into());
    }
    let num = |s: &[u8]| s.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    let (year, month, day) = (num(&b[6..10]), num(&b[10..12]), num(&b[12..14]));
    let exists = || {
        let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()
    };
    if year < MIN_BIRTH_YEAR || exists().is_none() {
        return Err("ID number's birth date is not a valid date".into());
    }
    // Safe to slice: all 18 bytes were checked to be ASCII above.
    if check_char(&id[..17]) != Some(char::from(b[17])) {
        return Err("ID number's check digit does not match".into());
    }
    Ok(())
}

/// Builds a valid number from a six-digit address code, a birth date and a
/// sequence number (taken mod 1000; odd for men, even for women).
pub fn make(address: &str, birth: Date, seq: u16) -> String {
    let (y, m, d) = (birth.year(), u8::from(birth.month()), birth.day());
    let mut id = format!("{address}{y:04}{m:02}{d:02}{:03}", seq % 1000);
    let check = check_char(&id).unwrap_or('?');
    id.push(check);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::datetime::parse_date;

    #[test]
    fn check_digit_by_hand() {
        // 11010519491231002: 1*7+1*9+0*10+1*5+0*8+5*4+1*2+9*1+4*6+9*3+1*7+2*9+3*10+1*5+0*8+0*4+2*2 = 167,
        // 167 mod 11 = 2, (12 - 2) mod 11 = 10 -> X. This is the standard's own example.
        assert_eq!(check_char("11010519491231002"), Some('X'));
        assert_eq!(validate("11010519491231002X"), Ok(()));
        let id = make("310115", parse_date("1985-06-30").unwrap(), 123);
        assert_eq!(&id[..17], "31011519850630123");
        assert_eq!(validate(&id), Ok(()));
    }

    #[test]
    fn reasons_never_quote_the_number() {
        let good = make("320583", parse_date("1990-02-28").unwrap(), 57);
        let mut wrong_check: Vec<u8> = good.clone().into_bytes();
        wrong_check[17] = if wrong_check[17] == b'1' { b'2' } else { b'1' };
        let wrong_check = String::from_utf8(wrong_check).unwrap();
        // 1990-02-29 does not exist; the check digit is right, so only the date is wrong.
        let bad_date = {
            let mut s = String::from("32058319900229571");
            let c = check_char(&s).unwrap();
            s.push(c);
            s
        };
        let cases = [
            (good[..17].to_string(), "18 characters"),
            (format!("{}A{}", &good[..3], &good[4..]), "17 digits"),
            (format!("{}x", &good[..17]), "upper-case X"),
            (wrong_check, "check digit does not match"),
            (bad_date, "birth date is not a valid date"),
        ];
        for (id, expected) in cases {
            let reason = validate(&id).unwrap_err();
            assert!(reason.contains(expected), "{reason}");
            for window in 4..=id.len().min(6) {
                for start in 0..=id.len() - window {
                    if let Some(part) = id.get(start..start + window) {
                        assert!(!reason.contains(part), "reason quotes part of the number: {reason}");
                    }
                }
            }
        }
    }
}
