//! The four forms of 近体诗 the poet writes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Form {
    #[serde(rename = "五绝")]
    WuJue,
    #[serde(rename = "七绝")]
    QiJue,
    #[serde(rename = "五律")]
    WuLv,
    #[serde(rename = "七律")]
    QiLv,
}

impl Form {
    pub(crate) const ALL: [Form; 4] = [Form::WuJue, Form::QiJue, Form::WuLv, Form::QiLv];

    pub fn name(self) -> &'static str {
        match self {
            Form::WuJue => "五绝",
            Form::QiJue => "七绝",
            Form::WuLv => "五律",
            Form::QiLv => "七律",
        }
    }

    pub(crate) fn chars_per_line(self) -> usize {
        match self {
            Form::WuJue | Form::WuLv => 5,
            Form::QiJue | Form::QiLv => 7,
        }
    }

    pub fn lines(self) -> usize {
        match self {
            Form::WuJue | Form::QiJue => 4,
            Form::WuLv | Form::QiLv => 8,
        }
    }

    /// The form with this many lines of this many characters.
    pub(crate) fn from_shape(lines: usize, chars: usize) -> Option<Form> {
        Form::ALL
            .into_iter()
            .find(|f| f.lines() == lines && f.chars_per_line() == chars)
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Form {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Form::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown form '{s}': expected one of 五绝, 七绝, 五律, 七律"))
    }
}
