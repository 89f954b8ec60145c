//! User names for `top`'s USER column: the host's `/etc/passwd`, read once (live); a uid it
//! does not list, and every uid of a trace from another machine, shows as its number.
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct Users(HashMap<u32, String>);

impl Users {
    /// Names from `passwd`'s text (`name:x:uid:...` lines; others are skipped).
    pub fn parse(passwd: &str) -> Self {
        let mut m = HashMap::new();
        for line in passwd.lines() {
            let mut f = line.split(':');
            let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if let Ok(uid) = uid.parse::<u32>() {
                if !name.is_empty() {
                    m.entry(uid).or_insert_with(|| name.to_string());
                }
            }
        }
        Self(m)
    }

    /// The host's users (none when /etc/passwd cannot be read: numbers then).
    pub fn from_host() -> Self {
        std::fs::read_to_string("/etc/passwd")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    /// Numbers only.
    pub fn numeric() -> Self {
        Self::default()
    }

    pub fn name(&self, uid: u32) -> String {
        self.0.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_passwd_numbers_otherwise() {
        let u =
            Users::parse("root:x:0:0:root:/root:/bin/bash\nbad line\nnobody:x:65534:65534::/:/x\n");
        assert_eq!(u.name(0), "root");
        assert_eq!(u.name(65534), "nobody");
        assert_eq!(u.name(1000), "1000");
    }
}
