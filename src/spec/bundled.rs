//! Pipelines written for the Go flowctl name their components by container image
//! (`ghcr.io/withobsrvr/ttp-processor:latest`) or by registry reference
//! (`type: stellar-live-source@v1.0.0`). flowctl runs processes, not containers; for the
//! components it ships itself it runs the bundled program instead, so those files work as they
//! are. Everything else must say which program to run with `command:`.

/// A bundled program standing in for an image or registry component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bundled {
    /// The name the image or registry reference uses.
    pub name: &'static str,
    /// The program flowctl ships (looked up next to flowctl, then `/usr/lib/flowctl`).
    pub command: &'static str,
    /// Variables the image implied, set unless the component's `env` sets them.
    pub env: &'static [(&'static str, &'static str)],
}

const BUNDLED: &[Bundled] = &[
    Bundled {
        name: "stellar-live-source",
        command: "stellar-live-source",
        env: &[],
    },
    Bundled {
        name: "stellar-live-source-datalake",
        command: "stellar-live-source",
        env: &[("BACKEND", "datalake")],
    },
    Bundled {
        name: "ttp-processor",
        command: "ttp-processor",
        env: &[],
    },
    Bundled {
        name: "ttp-sink",
        command: "ttp-sink",
        env: &[],
    },
    // The Arrow data plane (obsrvr-stellar-components).
    Bundled {
        name: "stellar-arrow-source",
        command: "stellar-arrow-source",
        env: &[],
    },
    Bundled {
        name: "ttp-arrow-processor",
        command: "ttp-arrow-processor",
        env: &[],
    },
    Bundled {
        name: "arrow-analytics-sink",
        command: "arrow-analytics-sink",
        env: &[],
    },
    // Soroban contract data (the contract-data processor and its PostgreSQL consumer).
    Bundled {
        name: "contract-data-processor",
        command: "contract-data-processor",
        env: &[],
    },
    Bundled {
        name: "contract-data-sink",
        command: "contract-data-sink",
        env: &[],
    },
];

/// The programs flowctl ships, for messages.
pub fn commands() -> String {
    let mut names: Vec<&str> = BUNDLED.iter().map(|b| b.command).collect();
    names.dedup();
    names.join(", ")
}

/// Whether `program` is one flowctl ships, written by its bare name (`ttp-processor`).
pub fn is_command(program: &str) -> bool {
    BUNDLED.iter().any(|b| b.command == program)
}

/// The repository name of an image reference: `ghcr.io/withobsrvr/ttp-processor:latest`,
/// `localhost:5000/x/ttp-processor@sha256:…` → `ttp-processor`.
pub fn image_name(image: &str) -> &str {
    let image = image.trim();
    let image = image.split_once('@').map_or(image, |(name, _digest)| name);
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map_or(last, |(name, _tag)| name)
}

/// The bundled program for an image, if flowctl ships it.
pub fn from_image(image: &str) -> Option<Bundled> {
    let name = image_name(image);
    BUNDLED.iter().copied().find(|b| b.name == name)
}

/// The Go flowctl's registry form `NAME@VERSION` (`withobsrvr/stellar-live-source@v1.0.0`):
/// `None` when `type` is not in that form (`source`, `processor`), else the bundled program or
/// the unknown name.
pub fn from_type(kind: &str) -> Option<Result<Bundled, String>> {
    let (name, _version) = kind.trim().split_once('@')?;
    let name = name.rsplit('/').next().unwrap_or(name);
    Some(
        BUNDLED
            .iter()
            .copied()
            .find(|b| b.name == name)
            .ok_or_else(|| name.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_ignore_registry_tag_and_digest() {
        assert_eq!(
            image_name("ghcr.io/withobsrvr/stellar-live-source:latest"),
            "stellar-live-source"
        );
        assert_eq!(
            image_name("localhost:5000/ttp-processor@sha256:ab"),
            "ttp-processor"
        );
        assert_eq!(image_name("ttp-processor"), "ttp-processor");
    }

    #[test]
    fn bundled_images_map_to_programs() {
        let dl = from_image("withobsrvr/stellar-live-source-datalake:v2").unwrap();
        assert_eq!(dl.command, "stellar-live-source");
        assert_eq!(dl.env, &[("BACKEND", "datalake")]);
        assert_eq!(
            from_image("ghcr.io/withobsrvr/ttp-processor:latest")
                .unwrap()
                .command,
            "ttp-processor"
        );
        assert!(from_image("withobsrvr/consumer-app:latest").is_none());
    }

    #[test]
    fn registry_types() {
        assert_eq!(from_type("source"), None);
        assert_eq!(
            from_type("stellar-live-source@v1.0.0")
                .unwrap()
                .unwrap()
                .command,
            "stellar-live-source"
        );
        assert_eq!(
            from_type("contract-events-processor@v1.0.0")
                .unwrap()
                .unwrap_err(),
            "contract-events-processor"
        );
    }
}
