{{/*
The mirror DaemonSet. Pass a dict: root (the chart's root context), restore (false: the
DaemonSet of mode mirror, whose init container runs `mirror`; true: the post-delete hook's,
whose init container runs `mirror --remove` and whose main container answers on a port when
that is done).
*/}}
{{- define "offline-images.mirrorDaemonSet" -}}
{{- $root := .root }}
{{- $restore := .restore }}
{{- $ip := $root.Values.imagePull }}
{{- $m := $ip.mirror }}
{{- if not $m.registry }}
{{- fail "imagePull.mode mirror: set imagePull.mirror.registry to the site registry (host[:port]) that offline-images push filled" }}
{{- end }}
{{- if not $m.upstreams }}
{{- fail "imagePull.mode mirror: set imagePull.mirror.upstreams to the registries the release's images come from (docker.io, quay.io, ...): `offline-images list --json DIR` names them" }}
{{- end }}
{{- $component := ternary "image-mirror-restore" "image-mirror" $restore }}
{{- $labels := include "offline-images.labels" $root | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/component" $component }}
{{- $to := $m.registry }}
{{- with $m.prefix }}
{{- $to = printf "%s/%s" $m.registry (trimAll "/" .) }}
{{- end }}
{{- $etc := dir $m.certsDir }}
{{- $restorePort := 8070 }}
{{- if $restore }}
# helm uninstall: puts back every node's own hosts.toml files (offline-images mirror --remove
# in the init container); the main container then answers on port {{ $restorePort }}, which the
# hook's wait Pod asks every node's pod for before Helm deletes this DaemonSet. Review with:
# kubectl logs -l app.kubernetes.io/instance={{ $root.Release.Name }},app.kubernetes.io/component=image-mirror-restore -c mirror --prefix
{{- else }}
# Points every node's containerd at the site registry {{ $to }}, nodes that join later
# included: the init container writes <certsDir>/<upstream>/hosts.toml (offline-images mirror),
# the main container then waits at next to no cost so that the pod stays and reports ready.
# Review a node with: kubectl logs -l app.kubernetes.io/instance={{ $root.Release.Name }},app.kubernetes.io/component=image-mirror -c mirror --prefix
{{- end }}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ include "offline-images.mirrorName" (dict "root" $root "restore" $restore) }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- toYaml $labels | nindent 4 }}
  {{- if $restore }}
  annotations:
    {{- include "offline-images.mirrorRestoreHook" (dict "root" $root "offset" 0) | nindent 4 }}
  {{- end }}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ $root.Chart.Name | quote }}
      app.kubernetes.io/instance: {{ $root.Release.Name | trunc 63 | trimSuffix "-" | quote }}
      app.kubernetes.io/component: {{ $component }}
  updateStrategy:
    type: RollingUpdate
  template:
    metadata:
      labels:
        {{- merge (deepCopy $labels) ($ip.podLabels | default dict) | toYaml | nindent 8 }}
      {{- with $ip.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      automountServiceAccountToken: false
      {{- with $ip.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $ip.imagePullSecrets }}
      imagePullSecrets:
        {{- include "offline-images.pullSecrets" $ | nindent 8 }}
      {{- end }}
      {{- with $ip.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $ip.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # Every node, control plane and tainted nodes included, unless the values say otherwise.
      tolerations:
        {{- toYaml ($ip.tolerations | default (list (dict "operator" "Exists"))) | nindent 8 }}
      initContainers:
        - name: mirror
          image: {{ include "offline-images.importerImage" $root | quote }}
          imagePullPolicy: {{ $ip.importerImage.pullPolicy }}
          command: ["/offline-images"]
          args:
            - mirror
            - --host-root=/host
            - --containerd-address={{ $ip.containerdAddress | default "/run/containerd/containerd.sock" }}
            - --containerd-config={{ $m.containerdConfig }}
          env:
            - name: MIRROR_REGISTRY
              value: {{ $to | quote }}
            - name: MIRROR_UPSTREAMS
              value: {{ join "," $m.upstreams | quote }}
            {{- if $restore }}
            - name: MIRROR_REMOVE
              value: "true"
            {{- end }}
            {{- if and $m.caSecret (not $restore) }}
            - name: MIRROR_CA_FILE
              value: /ca/ca.crt
            {{- end }}
            {{- if $m.plainHttp }}
            - name: MIRROR_PLAIN_HTTP
              value: "true"
            {{- end }}
          # uid 0 without capabilities: the owner of the node's containerd directory and socket,
          # nothing more.
          securityContext:
            runAsUser: 0
            runAsNonRoot: false
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          resources:
            {{- toYaml $ip.resources | nindent 12 }}
          volumeMounts:
            - name: containerd-etc
              mountPath: {{ printf "/host%s" $etc | quote }}
            - name: containerd-socket
              mountPath: {{ printf "/host%s" ($ip.containerdAddress | default "/run/containerd/containerd.sock") | quote }}
            {{- if and $m.caSecret (not $restore) }}
            - name: site-ca
              mountPath: /ca
              readOnly: true
            {{- end }}
      containers:
        - name: wait
          image: {{ include "offline-images.importerImage" $root | quote }}
          imagePullPolicy: {{ $ip.importerImage.pullPolicy }}
          command: ["/offline-images"]
          {{- if $restore }}
          args: ["wait", "--listen", "{{ $restorePort }}"]
          ports:
            - name: restored
              containerPort: {{ $restorePort }}
              protocol: TCP
          {{- else }}
          args: ["wait"]
          {{- end }}
          securityContext:
            runAsUser: 65534
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          resources:
            requests:
              cpu: 1m
              memory: 4Mi
            limits:
              memory: 16Mi
      volumes:
        # The directory that holds containerd's config.toml and its certs.d (certsDir's
        # parent): mirror writes only into certsDir/<upstream>/.
        - name: containerd-etc
          hostPath:
            path: {{ $etc | quote }}
            type: DirectoryOrCreate
        - name: containerd-socket
          hostPath:
            path: {{ $ip.containerdAddress | default "/run/containerd/containerd.sock" | quote }}
            type: Socket
        {{- if and $m.caSecret (not $restore) }}
        - name: site-ca
          secret:
            secretName: {{ $m.caSecret | quote }}
            items:
              - key: ca.crt
                path: ca.crt
        {{- end }}
{{- end -}}

{{/* The name of the mirror DaemonSet (restore: the post-delete hook's) and of its Service. */}}
{{- define "offline-images.mirrorName" -}}
{{- $base := printf "%s-image-mirror" (include "offline-images.namePrefix" .root) -}}
{{- if .restore -}}
{{- $base = printf "%s-restore" (trunc 55 $base | trimSuffix "-") -}}
{{- end -}}
{{- $base | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The post-delete hook annotations of the restore objects; offset orders them. */}}
{{- define "offline-images.mirrorRestoreHook" -}}
helm.sh/hook: post-delete
helm.sh/hook-weight: {{ .offset | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}
