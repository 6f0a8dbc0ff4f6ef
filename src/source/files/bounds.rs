//! The bounds on what is read, so that a broken or hostile file costs the YAML parser little: a
//! manifest's size, the documents read from one file, and how deeply its flow collections nest.

/// The largest manifest file read (a JobPolicy with 10,000 project paths is about 0.5 MB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The most YAML documents read from one file.
pub const MAX_DOCUMENTS: usize = 100;
/// The deepest nesting of flow collections (`[…]`, `{…}`) accepted: deeper ones take the YAML
/// parser quadratic time, and no JobPolicy needs more than a few levels.
pub const MAX_FLOW_NESTING: usize = 32;

/// The bounds on a manifest's text that keep the YAML parser's work small: at most
/// [`MAX_MANIFEST_BYTES`], flow collections nested at most [`MAX_FLOW_NESTING`] deep.
pub fn check_manifest_text(text: &str) -> Result<(), String> {
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} bytes: manifest files are read up to {MAX_MANIFEST_BYTES} bytes (1 MiB)",
            text.len()
        ));
    }
    let depth = flow_nesting(text);
    if depth > MAX_FLOW_NESTING {
        return Err(format!(
            "flow collections nested {depth} deep: at most {MAX_FLOW_NESTING} are read"
        ));
    }
    Ok(())
}

/// The deepest nesting of `[`/`{` outside quoted scalars and comments (a close estimate: it
/// only has to bound the parser's work).
fn flow_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for line in text.lines() {
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}
