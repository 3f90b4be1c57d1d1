//! The `LanewatchSite` custom resource (`lanewatch.io/v1alpha1`): a site's id, jurisdiction,
//! lane policies and agent config (inline TOML or a ConfigMap key) in the spec; conditions,
//! observed generation, agents online and total, and the config rollout in the status. The
//! CRD's YAML is generated from these types ([`crd_yaml`]) and committed under the chart's
//! `crds/`; a test fails when it drifts (`LANEWATCH_BLESS=1` rewrites it).

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A site whose configuration lives in Kubernetes (and so in git): the control plane turns
/// it into the same validated config rollout as a GraphQL edit, and refuses GraphQL edits of
/// the site while this resource manages it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lanewatch.io",
    version = "v1alpha1",
    kind = "LanewatchSite",
    plural = "lanewatchsites",
    shortname = "lwsite",
    namespaced,
    status = "LanewatchSiteStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Site","type":"string","jsonPath":".spec.siteId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"integer","jsonPath":".status.rollout.version"}"#,
    printcolumn = r#"{"name":"Online","type":"integer","jsonPath":".status.agentsOnline"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LanewatchSiteSpec {
    /// The site's id, as its agents name it (`site_id` in their config). One resource per site.
    pub site_id: String,
    /// The legal jurisdiction whose retention rules apply to the site's captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// HOV policies by lane; lanes not listed keep the policy they have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<LanePolicySpec>,
    /// The agents' config file: exactly one of `inline` and `configMapRef`.
    pub agent_config: AgentConfigSource,
}

/// The HOV rule of one lane.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LanePolicySpec {
    /// The lane's index (0 = the leftmost lane the cameras see).
    pub lane: u32,
    /// At least this many occupants (1 to 9).
    pub min_occupants: u32,
    /// When the rule is in force (UTC); always when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<TimeWindowSpec>,
}

/// A UTC time-of-day window `[start, end)`, as `HH:MM`; `start` after `end` wraps midnight.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TimeWindowSpec {
    pub start: String,
    pub end: String,
}

/// Where the agents' config file comes from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfigSource {
    /// The config file's TOML text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A key of a ConfigMap in the resource's namespace holding the TOML text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapKeyRef {
    pub name: String,
    /// Default: `agent.toml`.
    #[serde(default = "default_config_key")]
    pub key: String,
}

fn default_config_key() -> String {
    "agent.toml".to_owned()
}

/// What the control plane made of the resource.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LanewatchSiteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<SiteCondition>,
    /// Agents of the site connected now.
    #[serde(default)]
    pub agents_online: u32,
    /// Agents that ever connected for the site.
    #[serde(default)]
    pub agents_total: u32,
    /// The rollout of the site's newest config version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// A condition in the Kubernetes convention (`metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteCondition {
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why.
    pub reason: String,
    /// For people: what is wrong, naming the field (and line) where it can.
    pub message: String,
    /// RFC 3339; when `status` last changed.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How far the site's newest config version got, agent by agent.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The site's newest config version.
    pub version: u64,
    pub pending: u32,
    pub staged: u32,
    pub applied: u32,
    pub rejected: u32,
}

/// Where the chart keeps the generated CRD, from the workspace root.
pub const CRD_PATH: &str = "helm/lanewatch/crds/lanewatchsites.lanewatch.io.yaml";

/// The CRD's YAML as committed under the chart's `crds/`.
pub fn crd_yaml() -> String {
    let body = serde_saphyr::to_string(&LanewatchSite::crd()).expect("a CRD always serializes");
    format!(
        "# Generated from control-plane/src/k8s/crd.rs by `lanewatch-control crd`; do not edit.\n\
         # A test fails when this file drifts from the code (LANEWATCH_BLESS=1 rewrites it).\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_crd_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(CRD_PATH);
        let yaml = crd_yaml();
        if std::env::var_os("LANEWATCH_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == yaml,
            "{CRD_PATH} drifted from the code; rerun with LANEWATCH_BLESS=1 and commit it"
        );
    }

    #[test]
    fn the_crd_has_a_status_subresource_and_a_structural_schema() {
        let crd = LanewatchSite::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("lanewatchsites.lanewatch.io"));
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["agentConfig", "siteId"]));
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        for field in ["conditions", "observedGeneration", "agentsOnline", "agentsTotal", "rollout"] {
            assert!(status.get(field).is_some(), "status.{field} is missing");
        }
    }

    #[test]
    fn a_resource_reads_from_yaml_as_people_write_it() {
        let yaml = "apiVersion: lanewatch.io/v1alpha1\nkind: LanewatchSite\nmetadata:\n  name: north\n  namespace: lw\n\
                    spec:\n  siteId: i5-north\n  lanes:\n  - lane: 0\n    minOccupants: 2\n    windows:\n    - {start: \"07:00\", end: \"10:00\"}\n\
                    \x20 agentConfig:\n    configMapRef: {name: i5-north}\n";
        let site: LanewatchSite = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(site.spec.site_id, "i5-north");
        assert_eq!(site.spec.lanes[0].windows[0].start, "07:00");
        let cm = site.spec.agent_config.config_map_ref.unwrap();
        assert_eq!((cm.name.as_str(), cm.key.as_str()), ("i5-north", "agent.toml"));
    }
}
