{{/* An image as kube-prometheus-stack writes it: the global registry when set, else the
image's own; "v" + appVersion when the tag is empty; "@sha256:" + sha when a sha is given. */}}
{{- define "monitoring.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $registry := $root.Values.global.imageRegistry | default $image.registry -}}
{{- $tag := $image.tag | default (printf "v%s" $root.Chart.AppVersion) -}}
{{- if $image.sha -}}
{{- printf "%s/%s:%s@sha256:%s" $registry $image.repository $tag $image.sha -}}
{{- else -}}
{{- printf "%s/%s:%s" $registry $image.repository $tag -}}
{{- end -}}
{{- end -}}
