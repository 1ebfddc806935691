//! Italian identifiers: codice fiscale (with omocodia), partita IVA, ISTAT
//! municipality codes. Algorithms from the Agenzia delle Entrate rules.

/// Why an identifier is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be {0} characters long")]
    Length(usize),
    #[error("has an invalid character at position {0}")]
    Character(usize),
    #[error("check character is wrong (expected {expected})")]
    Check { expected: char },
}

/// Value of a character in an odd position (1st, 3rd, …) of a codice fiscale.
const ODD: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

/// Positions (0-based) that hold digits; omocodia replaces them with letters.
const DIGIT_POSITIONS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];
/// The letters omocodia uses for 0..9.
const OMOCODIA: &[u8; 10] = b"LMNPQRSTUV";

/// Validates a personal codice fiscale (16 characters, case-insensitive,
/// omocodia allowed) including its check character.
pub fn validate_fiscal_code(cf: &str) -> Result<(), IdError> {
    let cf = cf.to_ascii_uppercase();
    let bytes = cf.as_bytes();
    if bytes.len() != 16 {
        return Err(IdError::Length(16));
    }
    for (i, &b) in bytes.iter().enumerate() {
        let ok = if DIGIT_POSITIONS.contains(&i) {
            b.is_ascii_digit() || OMOCODIA.contains(&b)
        } else {
            b.is_ascii_uppercase()
        };
        if !ok {
            return Err(IdError::Character(i + 1));
        }
    }
    // Month letter.
    if !b"ABCDEHLMPRST".contains(&bytes[8]) {
        return Err(IdError::Character(9));
    }
    let expected = fiscal_code_check_char(&bytes[..15]);
    if bytes[15] as char != expected {
        return Err(IdError::Check { expected });
    }
    Ok(())
}

/// The check character of the first 15 characters of a codice fiscale.
pub fn fiscal_code_check_char(first15: &[u8]) -> char {
    let sum: u32 = first15
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let idx = if b.is_ascii_digit() {
                (b - b'0') as usize
            } else {
                (b - b'A') as usize
            };
            // Positions are counted from 1: index 0 is "odd".
            if i % 2 == 0 { ODD[idx] } else { idx as u32 }
        })
        .sum();
    (b'A' + (sum % 26) as u8) as char
}

/// Validates an 11-digit partita IVA (or numeric codice fiscale of a company).
pub fn validate_vat_number(piva: &str) -> Result<(), IdError> {
    let bytes = piva.as_bytes();
    if bytes.len() != 11 {
        return Err(IdError::Length(11));
    }
    if let Some(i) = bytes.iter().position(|b| !b.is_ascii_digit()) {
        return Err(IdError::Character(i + 1));
    }
    let d: Vec<u32> = bytes.iter().map(|b| (b - b'0') as u32).collect();
    let odd: u32 = (0..10).step_by(2).map(|i| d[i]).sum();
    let even: u32 = (1..10)
        .step_by(2)
        .map(|i| {
            let x = d[i] * 2;
            if x > 9 { x - 9 } else { x }
        })
        .sum();
    let check = (10 - (odd + even) % 10) % 10;
    if d[10] != check {
        return Err(IdError::Check {
            expected: char::from_digit(check, 10).unwrap_or('?'),
        });
    }
    Ok(())
}

/// An ISTAT municipality code: exactly six digits (leading zeros matter).
pub fn is_istat_code(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Masks a fiscal code or VAT number for logs: `RSS***********5N`.
pub fn mask(id: &str) -> String {
    let n = id.chars().count();
    if n <= 4 {
        return "*".repeat(n);
    }
    id.chars()
        .enumerate()
        .map(|(i, c)| if i < 3 || i >= n - 2 { c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fiscal_codes() {
        assert_eq!(validate_fiscal_code("RSSMRA45D25F205N"), Ok(()));
        assert_eq!(validate_fiscal_code("rssmra45d25f205n"), Ok(()));
        // A fixture seen in public code with the wrong check letter.
        assert_eq!(
            validate_fiscal_code("RSSMRA85M01H501Z"),
            Err(IdError::Check { expected: 'Q' })
        );
        assert_eq!(validate_fiscal_code("RSSMRA85M01H501Q"), Ok(()));
    }

    #[test]
    fn omocodia_is_accepted_with_its_recomputed_check() {
        // Replace the last digit (position 15: '5' → 'R') and recompute.
        let base = b"RSSMRA45D25F20R";
        let check = fiscal_code_check_char(base);
        let cf = format!("{}{check}", std::str::from_utf8(base).unwrap());
        assert_eq!(validate_fiscal_code(&cf), Ok(()));
        // A letter outside the omocodia set in a digit position is refused.
        assert_eq!(
            validate_fiscal_code("RSSMRA45D25F20AN"),
            Err(IdError::Character(15))
        );
    }

    #[test]
    fn malformed_fiscal_codes() {
        assert_eq!(
            validate_fiscal_code("RSSMRA45D25F205"),
            Err(IdError::Length(16))
        );
        assert_eq!(
            validate_fiscal_code("RSSMRA45Z25F205N"),
            Err(IdError::Character(9))
        );
        assert_eq!(
            validate_fiscal_code("R1SMRA45D25F205N"),
            Err(IdError::Character(2))
        );
    }

    #[test]
    fn vat_numbers() {
        assert_eq!(validate_vat_number("12345678903"), Ok(()));
        assert_eq!(validate_vat_number("86334519757"), Ok(()));
        assert_eq!(
            validate_vat_number("12345678901"),
            Err(IdError::Check { expected: '3' })
        );
        assert_eq!(validate_vat_number("1234567890"), Err(IdError::Length(11)));
        assert_eq!(
            validate_vat_number("1234567890A"),
            Err(IdError::Character(11))
        );
    }

    #[test]
    fn istat_codes() {
        assert!(is_istat_code("016024"));
        assert!(!is_istat_code("16024"));
        assert!(!is_istat_code("01602A"));
    }

    #[test]
    fn masking_keeps_only_the_ends() {
        assert_eq!(mask("RSSMRA45D25F205N"), "RSS***********5N");
        assert_eq!(mask("abc"), "***");
    }
}
