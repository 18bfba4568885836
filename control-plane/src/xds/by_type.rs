//! Per resource type, a value, for one stream. A stream serves a handful of
//! types (Envoy asks for four), so they are a short list in type URL order:
//! a few hundred bytes, where a B-tree map's first node takes room for
//! eleven entries (about 2 KiB per stream for its protocol state, as much
//! again for its standing, with a thousand streams on a node).

/// Values by type URL, iterated in type URL order.
#[derive(Debug, Clone, PartialEq)]
pub struct ByType<T>(Vec<(String, T)>);

impl<T> Default for ByType<T> {
    fn default() -> Self {
        ByType(Vec::new())
    }
}

impl<T> ByType<T> {
    fn position(&self, type_url: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| t.as_str().cmp(type_url))
    }

    pub fn contains(&self, type_url: &str) -> bool {
        self.position(type_url).is_ok()
    }

    pub fn get(&self, type_url: &str) -> Option<&T> {
        let i = self.position(type_url).ok()?;
        Some(&self.0[i].1)
    }

    pub fn get_mut(&mut self, type_url: &str) -> Option<&mut T> {
        let i = self.position(type_url).ok()?;
        Some(&mut self.0[i].1)
    }

    /// The value of `type_url`, a default one put in first if there is none.
    pub fn entry(&mut self, type_url: &str) -> &mut T
    where
        T: Default,
    {
        let i = match self.position(type_url) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (type_url.to_string(), T::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn type_urls(&self) -> Vec<String> {
        self.0.iter().map(|(t, _)| t.clone()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.0.iter().map(|(t, v)| (t, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut T)> {
        self.0.iter_mut().map(|(t, v)| (&*t, v))
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
impl<T> std::ops::Index<&str> for ByType<T> {
    type Output = T;

    fn index(&self, type_url: &str) -> &T {
        match self.get(type_url) {
            Some(value) => value,
            None => panic!("no {type_url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_type_and_listed_in_type_order() {
        let mut by_type: ByType<u32> = ByType::default();
        for (type_url, value) in [
            ("route", 4),
            ("cluster", 1),
            ("listener", 3),
            ("endpoint", 2),
        ] {
            *by_type.entry(type_url) += value;
        }
        *by_type.entry("cluster") += 10;
        assert_eq!(by_type.get("cluster"), Some(&11));
        assert!(by_type.contains("route") && !by_type.contains("secret"));
        assert_eq!(by_type.get_mut("secret"), None);
        let listed: Vec<(&str, u32)> = by_type.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        assert_eq!(
            listed,
            [
                ("cluster", 11),
                ("endpoint", 2),
                ("listener", 3),
                ("route", 4)
            ]
        );
        assert_eq!(
            by_type.type_urls(),
            ["cluster", "endpoint", "listener", "route"]
        );
        assert_eq!(by_type.values().len(), 4);
    }
}
