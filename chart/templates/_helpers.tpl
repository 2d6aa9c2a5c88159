{{/*
Helpers of the offline-images chart. Every name is prefixed with the chart name, so they
cannot clash with a parent chart's helpers, and every object name is cut to 63 characters
(the limit of a DNS label) without a trailing dash.
*/}}

{{/* The chart name and version, as in the helm.sh/chart label. */}}
{{- define "offline-images.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: the release name, followed by the alias when the chart is a
dependency under an alias (two aliases of the chart in one parent must not share their Jobs).
*/}}
{{- define "offline-images.namePrefix" -}}
{{- if eq .Chart.Name "offline-images" -}}
{{- .Release.Name -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name -}}
{{- end -}}
{{- end -}}

{{/* The import Job's name: <release>-image-import (<release>-<alias>-image-import under an
alias). Also the ServiceAccount's default name. */}}
{{- define "offline-images.importName" -}}
{{- printf "%s-image-import" (include "offline-images.namePrefix" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ServiceAccount the import Job runs as. */}}
{{- define "offline-images.serviceAccountName" -}}
{{- $sa := .Values.imagePull.serviceAccount -}}
{{- if $sa.create -}}
{{- if eq $sa.name "default" -}}
{{- fail "imagePull.serviceAccount.name: default is the namespace's own account; with create: true it would become a hook object that Helm deletes at every install: set create: false to run as it, or choose another name" -}}
{{- end -}}
{{- default (include "offline-images.importName" .) $sa.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the importer's objects. */}}
{{- define "offline-images.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name | quote }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: image-import
{{- end -}}

{{/* Labels of every object of the chart. */}}
{{- define "offline-images.labels" -}}
helm.sh/chart: {{ include "offline-images.chart" . | quote }}
{{ include "offline-images.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
{{- end -}}

{{/* The importer image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "offline-images.importerImage" -}}
{{- $image := .Values.imagePull.importerImage -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag | toString) -}}
{{- end -}}

{{/*
Hook annotations of an importer object. Pass a dict with "root" (the chart context) and
"offset" (added to hook.weight: objects the Job needs get a lower weight, so they exist first).
*/}}
{{- define "offline-images.hookAnnotations" -}}
{{- $hook := .root.Values.imagePull.hook -}}
helm.sh/hook: {{ .hook | default "pre-install,pre-upgrade" }}
helm.sh/hook-weight: {{ add (int $hook.weight) (int .offset) | quote }}
helm.sh/hook-delete-policy: {{ .deletePolicy | default $hook.deletePolicy | quote }}
{{- end -}}

{{/*
The cluster's nodes as a JSON list of Node objects, from `lookup`. Empty where `lookup` has no
cluster to ask: `helm template`, `helm install --dry-run` (client side), `helm lint`.
Needs permission to list nodes (cluster-scoped) at install time.
*/}}
{{- define "offline-images.clusterNodes" -}}
{{- $found := lookup "v1" "Node" "" "" -}}
{{- dig "items" (list) $found | toJson -}}
{{- end -}}

{{/*
Which nodes get an import Job with imagePull.allNodes, as JSON:
  {"listed": <nodes lookup returned>, "targets": [{"node", "hostname"}], "skipped": ["<node>: <why>"]}
A node is skipped when it is unschedulable (cordoned), when its labels do not match
imagePull.nodeSelector, or when it has a NoSchedule or NoExecute taint that
imagePull.tolerations do not tolerate. The pod is pinned with the node's
kubernetes.io/hostname label (the node name when the label is missing).
*/}}
{{- define "offline-images.nodePlan" -}}
{{- $ip := .Values.imagePull -}}
{{- $nodes := include "offline-images.clusterNodes" . | fromJsonArray -}}
{{- $targets := list -}}
{{- $skipped := list -}}
{{- range $node := $nodes -}}
{{- $name := dig "metadata" "name" "" $node -}}
{{- $labels := dig "metadata" "labels" (dict) $node -}}
{{- $why := "" -}}
{{- if dig "spec" "unschedulable" false $node -}}
{{- $why = "unschedulable (cordoned)" -}}
{{- end -}}
{{- if not $why -}}
{{- range $key, $want := $ip.nodeSelector -}}
{{- if and (not $why) (ne (toString (get $labels $key)) (toString $want)) -}}
{{- $why = printf "label %s is not %q (imagePull.nodeSelector)" $key (toString $want) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $why -}}
{{- range $taint := dig "spec" "taints" (list) $node -}}
{{- $effect := get $taint "effect" -}}
{{- if and (not $why) (has $effect (list "NoSchedule" "NoExecute")) -}}
{{- $tolerated := false -}}
{{- range $t := $ip.tolerations -}}
{{- $tkey := toString (get $t "key") -}}
{{- $op := toString (get $t "operator") | default "Equal" -}}
{{- $teffect := toString (get $t "effect") -}}
{{- if or (not $teffect) (eq $teffect $effect) -}}
{{- if and (not $tkey) (eq $op "Exists") -}}
{{- $tolerated = true -}}
{{- else if eq $tkey (toString (get $taint "key")) -}}
{{- if or (eq $op "Exists") (eq (toString (get $t "value")) (toString (get $taint "value"))) -}}
{{- $tolerated = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $tolerated -}}
{{- $why = printf "taint %s=%s:%s is not tolerated (imagePull.tolerations)" (toString (get $taint "key")) (toString (get $taint "value")) $effect -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $why -}}
{{- $skipped = append $skipped (printf "%s: %s" $name $why) -}}
{{- else -}}
{{- $host := get $labels "kubernetes.io/hostname" | default $name -}}
{{- $targets = append $targets (dict "node" $name "hostname" $host) -}}
{{- end -}}
{{- end -}}
{{- dict "listed" (len $nodes) "targets" $targets "skipped" $skipped | toJson -}}
{{- end -}}

{{/*
The nodes to render a Job for, as JSON: a list of {"node", "hostname"}. With imagePull.allNodes
and a node list from lookup, every eligible node; otherwise one entry with an empty node: one
Job, not pinned to a node.
*/}}
{{- define "offline-images.jobTargets" -}}
{{- $one := list (dict "node" "" "hostname" "") -}}
{{- if .Values.imagePull.allNodes -}}
{{- $plan := include "offline-images.nodePlan" . | fromJson -}}
{{- if eq (int $plan.listed) 0 -}}
{{- $one | toJson -}}
{{- else if not $plan.targets -}}
{{- fail (printf "imagePull.allNodes: none of the %d nodes can run the import Job: %s" (int $plan.listed) (join "; " $plan.skipped)) -}}
{{- else -}}
{{- $plan.targets | toJson -}}
{{- end -}}
{{- else -}}
{{- $one | toJson -}}
{{- end -}}
{{- end -}}

{{/*
The name of a Job for one node: dict "base" (e.g. <release>-image-import) and "node" (empty
for the one unpinned Job, which is then just the base). Per node: <base>-<node>-<hash>, at most
63 characters: the node name (dots made dashes) is cut to fit, and the first 8 hex digits of
the sha256 of "<base>/<node>" keep apart two long names that share a prefix, and a node's
import and prune Jobs when a long release name cuts both bases to the same prefix. Stable per
node.
*/}}
{{- define "offline-images.nodeJobName" -}}
{{- if .node -}}
{{- $prefix := printf "%s-%s" .base (.node | replace "." "-") | trunc 54 | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix (printf "%s/%s" .base .node | sha256sum | trunc 8) -}}
{{- else -}}
{{- .base -}}
{{- end -}}
{{- end -}}

{{/* The prune Job's base name: <release>-image-prune (<release>-<alias>-image-prune). */}}
{{- define "offline-images.pruneName" -}}
{{- printf "%s-image-prune" (include "offline-images.namePrefix" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The container image of the Jobs: the importer image, or in bootstrap mode an image every
node already has (the pause image), which runs the importer binary the bundle carries. */}}
{{- define "offline-images.jobImage" -}}
{{- $ip := .Values.imagePull -}}
{{- if $ip.bootstrap.enabled -}}
{{- printf "%s:%s" $ip.bootstrap.image (toString $ip.bootstrap.tag) -}}
{{- else -}}
{{- include "offline-images.importerImage" . -}}
{{- end -}}
{{- end -}}

{{/* Where the bundle's importer binary is in the Job's container (the bundle is at /images). */}}
{{- define "offline-images.bootstrapBinary" -}}
/images/.offline-images/offline-images
{{- end -}}
