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

{{/* Labels of every object of the chart. The revision label keeps the Jobs of one install
or upgrade apart from those an older revision left behind (failed Jobs are kept for review). */}}
{{- define "offline-images.labels" -}}
helm.sh/chart: {{ include "offline-images.chart" . | quote }}
{{ include "offline-images.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
offline-images.io/revision: {{ .Release.Revision | quote }}
{{- end -}}

{{/* The label selector of every import pod of this revision: `kubectl logs -l <this> --prefix`. */}}
{{- define "offline-images.logSelector" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=%s,offline-images.io/revision=%d" .root.Chart.Name (.root.Release.Name | trunc 63 | trimSuffix "-") (.component | default "image-import") (int .root.Release.Revision) -}}
{{- end -}}

{{/*
A repository with global.imageRegistry in front, when set: the registry part of the repository
(a first component with a dot or a colon, or localhost) is replaced, otherwise prefixed.
*/}}
{{- define "offline-images.withRegistry" -}}
{{- $registry := dig "global" "imageRegistry" "" (.root.Values | merge dict) -}}
{{- if $registry -}}
{{- $parts := splitList "/" .repository -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $parts = rest $parts -}}
{{- end -}}
{{- printf "%s/%s" (trimSuffix "/" $registry) (join "/" $parts) -}}
{{- else -}}
{{- .repository -}}
{{- end -}}
{{- end -}}

{{/* The importer image: repository:tag, the tag defaulting to the chart's appVersion, then
@digest when importerImage.digest pins it. */}}
{{- define "offline-images.importerImage" -}}
{{- $image := .Values.imagePull.importerImage -}}
{{- $ref := printf "%s:%s" (include "offline-images.withRegistry" (dict "root" . "repository" $image.repository)) (default .Chart.AppVersion $image.tag | toString) -}}
{{- with $image.digest -}}
{{- $ref = printf "%s@%s" $ref . -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/*
Hook annotations of an importer object. Pass a dict with "root" (the chart context), "offset"
(added to hook.weight: objects the Job needs get a lower weight, so they exist first), and
optionally "hook", "deletePolicy", "outputLogs" (true: add hook.outputLogPolicy) and
"importJob" (true for the import Jobs and their List: hook.keepSucceededJobs applies).
*/}}
{{- define "offline-images.hookAnnotations" -}}
{{- $hook := .root.Values.imagePull.hook -}}
{{- $policy := .deletePolicy | default $hook.deletePolicy -}}
{{- if and .importJob $hook.keepSucceededJobs -}}
{{- /* hook.keepSucceededJobs: the import Jobs stay after a success, until their TTL. */ -}}
{{- $policy = without (splitList "," (nospace $policy)) "hook-succeeded" | join "," | default "before-hook-creation" -}}
{{- end -}}
helm.sh/hook: {{ .hook | default "pre-install,pre-upgrade" }}
helm.sh/hook-weight: {{ add (int $hook.weight) (int .offset) | quote }}
helm.sh/hook-delete-policy: {{ $policy | quote }}
{{- if and .outputLogs $hook.outputLogPolicy }}
helm.sh/hook-output-log-policy: {{ $hook.outputLogPolicy | quote }}
{{- end }}
{{- end -}}

{{/*
The cluster's nodes as a JSON list of Node objects, from `lookup`. Empty where `lookup` has no
cluster to ask: `helm template`, `helm install --dry-run` (client side), `helm lint`, Argo CD.
Needs permission to list nodes (cluster-scoped) at install time.
*/}}
{{- define "offline-images.clusterNodes" -}}
{{- $found := lookup "v1" "Node" "" "" -}}
{{- dig "items" (list) $found | toJson -}}
{{- end -}}

{{/*
The runtime a node's kubelet uses, as its Node object reports it
(status.nodeInfo.containerRuntimeVersion, e.g. containerd://1.7.24, docker://28.5.2,
cri-o://1.31.1; cri-dockerd reports docker): the part before "://", or "" when the node does
not say. Pass a Node object.
*/}}
{{- define "offline-images.nodeRuntime" -}}
{{- $reported := dig "status" "nodeInfo" "containerRuntimeVersion" "" . | toString -}}
{{- if contains "://" $reported -}}
{{- first (splitList "://" $reported) -}}
{{- end -}}
{{- end -}}

{{/*
The runtime a node's Job imports into: imagePull.runtime when it is not auto; with auto, the
runtime the node's kubelet uses when it is containerd or docker (the images must land where
the kubelet reads them: on a cri-dockerd node, Docker, though Docker's containerd answers
too), crio where it is cri-o, else auto (the Job then probes). Pass a dict "root" and "node"
(a Node object).
*/}}
{{- define "offline-images.jobRuntime" -}}
{{- $ip := .root.Values.imagePull -}}
{{- $kubelet := include "offline-images.nodeRuntime" .node -}}
{{- if ne $ip.runtime "auto" -}}
{{- $ip.runtime -}}
{{- else if has $kubelet (list "containerd" "docker") -}}
{{- $kubelet -}}
{{- else if eq $kubelet "cri-o" -}}
crio
{{- else -}}
auto
{{- end -}}
{{- end -}}

{{/*
Why a node cannot run an import pod, or "" when it can. Pass a dict "root" and "node" (a Node
object). In this order: not Ready (a toleration of every taint, `operator: Exists`, would
otherwise reach nodes that are NotReady or unreachable), cordoned, not Linux, an architecture
the importer does not have, a runtime other than containerd, Docker and CRI-O (the kubelet
would not see what the importer can write), labels that do not match imagePull.nodeSelector, a
NoSchedule or NoExecute taint that imagePull.tolerations do not tolerate.
*/}}
{{- define "offline-images.whyNot" -}}
{{- $ip := .root.Values.imagePull -}}
{{- $node := .node -}}
{{- $labels := dig "metadata" "labels" (dict) $node -}}
{{- $ready := "" -}}
{{- range $c := dig "status" "conditions" (list) $node -}}
{{- if eq (toString (get $c "type")) "Ready" -}}
{{- $ready = toString (get $c "status") -}}
{{- end -}}
{{- end -}}
{{- $os := get $labels "kubernetes.io/os" | default (dig "status" "nodeInfo" "operatingSystem" "" $node) -}}
{{- $arch := get $labels "kubernetes.io/arch" | default (dig "status" "nodeInfo" "architecture" "" $node) -}}
{{- $why := "" -}}
{{- $kubelet := include "offline-images.nodeRuntime" $node -}}
{{- if ne $ready "True" -}}
{{- $why = printf "NotReady (its Ready condition is %s)" ($ready | default "missing") -}}
{{- else if dig "spec" "unschedulable" false $node -}}
{{- $why = "unschedulable (cordoned)" -}}
{{- else if ne $os "linux" -}}
{{- $why = printf "runs %s, not linux" ($os | default "an unknown OS") -}}
{{- else if not (has $arch $ip.architectures) -}}
{{- $why = printf "architecture %s: the importer has %s (imagePull.architectures)" ($arch | default "unknown") (join ", " $ip.architectures) -}}
{{- else if and (include "offline-images.perArch" .root) (not (has $arch $ip.bootstrap.architectures)) -}}
{{- $why = printf "architecture %s: bootstrap mode runs the bundle's importers for %s (imagePull.bootstrap.architectures)" ($arch | default "unknown") (join ", " $ip.bootstrap.architectures) -}}
{{- else if and $kubelet (not (has $kubelet (list "containerd" "docker" "cri-o"))) -}}
{{- $why = printf "its kubelet uses %s (status.nodeInfo.containerRuntimeVersion); the importer imports into containerd, Docker and CRI-O only" (dig "status" "nodeInfo" "containerRuntimeVersion" "" $node) -}}
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
{{- $why -}}
{{- end -}}

{{/*
Which nodes get an import Job, as JSON:
  {"listed": <nodes lookup returned>, "targets": ["<node>"], "skipped": ["<node>: <why>"],
   "runtimes": {"<node>": "<offline-images.jobRuntime>"}, "arches": {"<node>": "<kubernetes.io/arch>"}}
With imagePull.nodes, only those nodes are considered; a listed node the cluster does not have
fails the render. Without a node list from lookup, the targets are imagePull.nodes as given,
with no runtime of their own (imagePull.runtime applies).
*/}}
{{- define "offline-images.nodePlan" -}}
{{- $ip := .Values.imagePull -}}
{{- $nodes := include "offline-images.clusterNodes" . | fromJsonArray -}}
{{- $wanted := $ip.nodes | default list -}}
{{- $targets := list -}}
{{- $skipped := list -}}
{{- $names := list -}}
{{- $runtimes := dict -}}
{{- $arches := dict -}}
{{- range $node := $nodes -}}
{{- $name := dig "metadata" "name" "" $node -}}
{{- $names = append $names $name -}}
{{- if or (not $wanted) (has $name $wanted) -}}
{{- $why := include "offline-images.whyNot" (dict "root" $ "node" $node) -}}
{{- if $why -}}
{{- $skipped = append $skipped (printf "%s: %s" $name $why) -}}
{{- else -}}
{{- $targets = append $targets $name -}}
{{- $_ := set $runtimes $name (include "offline-images.jobRuntime" (dict "root" $ "node" $node)) -}}
{{- $labels := dig "metadata" "labels" (dict) $node -}}
{{- $_ = set $arches $name (get $labels "kubernetes.io/arch" | default (dig "status" "nodeInfo" "architecture" "" $node)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $nodes -}}
{{- range $w := $wanted -}}
{{- if not (has $w $names) -}}
{{- fail (printf "imagePull.nodes: %s is not a node of this cluster (it has %s)" $w (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $targets = $wanted -}}
{{- end -}}
{{- dict "listed" (len $nodes) "targets" $targets "skipped" $skipped "runtimes" $runtimes "arches" $arches | toJson -}}
{{- end -}}

{{/*
The nodes to render a Job for, as a JSON list of node names. With imagePull.allNodes or
imagePull.nodes, every eligible node; otherwise [""]: one Job, not pinned to a node.
allNodes with no node list to be had (lookup answers nothing under `helm template` and Argo CD)
fails, unless imagePull.nodes names the nodes.
*/}}
{{- define "offline-images.jobTargets" -}}
{{- $ip := .Values.imagePull -}}
{{- if or $ip.allNodes $ip.nodes -}}
{{- $plan := include "offline-images.nodePlan" . | fromJson -}}
{{- if and (eq (int $plan.listed) 0) (not $ip.nodes) -}}
{{- fail "imagePull.allNodes: no node list to be had: Helm's lookup answers nothing here (helm template, helm install --dry-run, Argo CD), so the nodes cannot be chosen. Name them in imagePull.nodes, or install with helm install/upgrade against the cluster as a user who may list nodes" -}}
{{- else if not $plan.targets -}}
{{- fail (printf "imagePull.allNodes: none of the %d nodes can run the import Job: %s" (int $plan.listed) (join "; " $plan.skipped)) -}}
{{- else -}}
{{- $plan.targets | toJson -}}
{{- end -}}
{{- else -}}
{{- list "" | toJson -}}
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

{{/* The name of a Job not pinned to a node: dict "base" and "arch" (offline-images.jobList):
the base, or <base>-<arch> (the base cut to fit 63 characters). */}}
{{- define "offline-images.archJobName" -}}
{{- if .arch -}}
{{- printf "%s-%s" (.base | trunc 57 | trimSuffix "-") .arch -}}
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

{{/* Where the bundle's importer binary is in the Job's container (the bundle is at /images).
Pass a dict "arch": a node architecture (imagePull.bootstrap.architectures), whose binary is in
.offline-images/linux-<arch>/; empty: the bundle's default binary, .offline-images/offline-images
(the amd64 one when the bundle has it). */}}
{{- define "offline-images.bootstrapBinary" -}}
{{- if .arch -}}
{{- printf "/images/.offline-images/linux-%s/offline-images" .arch -}}
{{- else -}}
/images/.offline-images/offline-images
{{- end -}}
{{- end -}}

{{/* The sha256 the bundled binary of "arch" is pinned to (pass a dict "root" and "arch", as for
offline-images.bootstrapBinary), or "": imagePull.bootstrap.binarySha256 pins the default
binary, binarySha256PerArch the binary of each architecture of bootstrap.architectures. */}}
{{- define "offline-images.bootstrapSha256" -}}
{{- $b := .root.Values.imagePull.bootstrap -}}
{{- $perArch := $b.binarySha256PerArch | default dict -}}
{{- if and .arch $b.binarySha256 -}}
{{- fail "imagePull.bootstrap.binarySha256 pins the bundle's default binary, which no Job runs with imagePull.bootstrap.architectures: pin each architecture's binary in imagePull.bootstrap.binarySha256PerArch (its sha256 is in .offline-images/linux-<arch>/offline-images.sha256)" -}}
{{- else if and (not .arch) (values $perArch | compact) -}}
{{- fail "imagePull.bootstrap.binarySha256PerArch needs imagePull.bootstrap.architectures: without it every Job runs the bundle's default binary, pinned by imagePull.bootstrap.binarySha256" -}}
{{- else if .arch -}}
{{- get $perArch .arch -}}
{{- else -}}
{{- $b.binarySha256 -}}
{{- end -}}
{{- end -}}

{{/*
The Jobs to render, as a JSON list of {"node": ..., "arch": ...}: one per node of
offline-images.jobTargets ("" for the one Job not pinned to a node), each with the node
architecture whose bundled importer it runs, or "" for the bundle's default binary. With
imagePull.bootstrap.architectures in bootstrap mode, the unpinned Job becomes one Job per
architecture (each on nodes of that architecture), and a node's Job runs its node's binary.
*/}}
{{- define "offline-images.jobList" -}}
{{- $ip := .Values.imagePull -}}
{{- $targets := include "offline-images.jobTargets" . | fromJsonArray -}}
{{- $jobs := list -}}
{{- if not (include "offline-images.perArch" .) -}}
{{- range $targets -}}
{{- $jobs = append $jobs (dict "node" . "arch" "") -}}
{{- end -}}
{{- else if eq (first $targets) "" -}}
{{- range $ip.bootstrap.architectures -}}
{{- $jobs = append $jobs (dict "node" "" "arch" .) -}}
{{- end -}}
{{- else -}}
{{- $plan := include "offline-images.nodePlan" . | fromJson -}}
{{- if eq (int $plan.listed) 0 -}}
{{- fail "imagePull.bootstrap.architectures: the node list cannot be had here (helm template, --dry-run, Argo CD), so each node's architecture is unknown: install against the cluster as a user who may list nodes, or leave bootstrap.architectures empty (every node runs the bundle's default binary)" -}}
{{- end -}}
{{- range $targets -}}
{{- $jobs = append $jobs (dict "node" . "arch" (get $plan.arches .)) -}}
{{- end -}}
{{- end -}}
{{- $jobs | toJson -}}
{{- end -}}

{{/* "true" when bootstrap mode runs one importer binary per architecture. */}}
{{- define "offline-images.perArch" -}}
{{- $b := .Values.imagePull.bootstrap -}}
{{- if and $b.enabled $b.architectures -}}
true
{{- end -}}
{{- end -}}
