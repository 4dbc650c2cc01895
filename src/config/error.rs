use std::fmt;

/// One problem in the plugin configuration: the field's path (as in
/// `routes[0].mcp.server.path`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            field: if field.is_empty() {
                "(root)".to_string()
            } else {
                field.to_string()
            },
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}
