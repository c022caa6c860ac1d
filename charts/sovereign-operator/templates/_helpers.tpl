{{/* Names and labels. */}}
{{- define "sovereign-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sovereign-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "sovereign-operator.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sovereign-operator.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sovereign-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sovereign-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sovereign-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sovereign-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sovereign-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sovereign-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sovereign-operator
{{- end -}}

{{/*
The cluster-wide permissions of the operator: the one list to edit when the code calls another
API. Every rule names the code that needs it. No wildcards. The e2e suite runs the operator
under exactly these rules (e2e/tests/harness.rs), so a missing one fails the tests.
*/}}
{{- define "sovereign-operator.clusterRules" -}}
# The custom resources: watched by the controllers (list/watch), read by name
# (backend → its region), status written with server-side apply.
# TokenBudgets: the budget controller watches them and merge-patches their status; the
# usage collector lists them for the gateway actions in force.
- apiGroups: [sovereign.ai]
  resources: [sovereignregions, inferencebackends, residencypolicies, tokenbudgets]
  verbs: [get, list, watch]
- apiGroups: [sovereign.ai]
  resources: [sovereignregions/status, inferencebackends/status, residencypolicies/status, tokenbudgets/status]
  verbs: [patch]
# Children applied with server-side apply (controllers/apply.rs: get, then patch, which
# needs create as well when the object is new), pruned by label (list + delete), and their
# metadata watched by label (list + watch) so an unchanged child is not read again.
# Namespaces are applied but never deleted; the audit watches them.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch, create, patch]
# ConfigMaps: gateway and collector config (owned, so watched); the audit watches them; the
# usage ledger is created, then replaced with a resourceVersion precondition (update), and
# the budget actions are applied (controllers/usage.rs).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
# The gateway pods to scrape: the endpoints of the gateway Service (controllers/usage.rs).
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# The gateway's ServiceAccount and the Role + RoleBinding that let it read exactly its budget
# actions ConfigMap (render/gateway.rs `actions_reader`). The API server lets the operator
# grant only what it holds itself (get/list/watch on configmaps, above): no bind or escalate.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
# PodMonitors for the vLLM servers when a region asks for them (monitoring.podMonitor);
# listed by the orphan clean-up, which skips them where the Prometheus Operator is absent.
- apiGroups: [monitoring.coreos.com]
  resources: [podmonitors]
  verbs: [get, list, watch, create, patch, delete]
# The compiled residency admission policies (policy controller); owned by their
# ResidencyPolicy, so the garbage collector deletes them, not the operator.
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingadmissionpolicies, validatingadmissionpolicybindings]
  verbs: [get, create, patch]
# Secrets: the backend controller checks that referenced Secrets exist (get), the audit watches
# their labels (list, watch, metadata only). Two values are read: the gateway master key, the bearer
# token of the usage scrape (controllers/usage.rs), and a budget's notification webhook URL
# (controllers/budget.rs).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
# Pods: a vLLM backend's pods (scheduler verdicts) and the audit.
- apiGroups: [""]
  resources: [pods, persistentvolumeclaims, replicationcontrollers, persistentvolumes]
  verbs: [list, watch]
# The rest of the residency audit (residency::kinds::KINDS, audited); kinds a cluster does
# not serve are skipped.
- apiGroups: [apps]
  resources: [daemonsets, replicasets]
  verbs: [list, watch]
- apiGroups: [batch]
  resources: [jobs, cronjobs]
  verbs: [list, watch]
- apiGroups: [velero.io]
  resources: [backupstoragelocations, volumesnapshotlocations, backups, schedules]
  verbs: [list, watch]
- apiGroups: [postgresql.cnpg.io]
  resources: [clusters]
  verbs: [list, watch]
- apiGroups: [barmancloud.cnpg.io]
  resources: [objectstores]
  verbs: [list, watch]
- apiGroups: [replication.storage.openshift.io]
  resources: [volumereplications, volumereplicationclasses, volumegroupreplications, volumegroupreplicationclasses]
  verbs: [list, watch]
- apiGroups: [argoproj.io]
  resources: [rollouts]
  verbs: [list, watch]
# Events on the custom resources (kube-runtime's Recorder creates, then patches a series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Permissions in the release namespace only: the leader election Lease. */}}
{{- define "sovereign-operator.namespaceRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end -}}
