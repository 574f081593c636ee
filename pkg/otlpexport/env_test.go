package otlpexport

import (
	"strings"
	"testing"
	"time"
)

// TestReadEnv: the OpenTelemetry variables as the specification gives
// them, and a clear error naming the variable for what cannot be read.
func TestReadEnv(t *testing.T) {
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
		"OTEL_EXPORTER_OTLP_HEADERS":  "authorization=Bearer%20abc, x-scope-orgid=7",
		"OTEL_EXPORTER_OTLP_TIMEOUT":  "2500",
		"OTEL_RESOURCE_ATTRIBUTES":    "k8s.node.name=node-1,deployment.environment=prod%2Feu",
		"OTEL_SERVICE_NAME":           "sstrace-edge",
	}
	e, err := ReadEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if e.Endpoint != "http://collector:4318" || e.Timeout != 2500*time.Millisecond ||
		e.Headers["Authorization"] != "Bearer abc" || e.Headers["X-Scope-Orgid"] != "7" ||
		e.Resource["k8s.node.name"] != "node-1" || e.Resource["deployment.environment"] != "prod/eu" ||
		e.Resource["service.name"] != "sstrace-edge" {
		t.Errorf("read %+v", e)
	}
	if e, err := ReadEnv(func(string) string { return "" }); err != nil || e.Endpoint != "" || e.Headers != nil || e.Resource != nil {
		t.Errorf("nothing set: %+v, %v", e, err)
	}
	for k, v := range map[string]string{
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_EXPORTER_OTLP_HEADERS":  "novalue",
		"OTEL_EXPORTER_OTLP_TIMEOUT":  "2s",
		"OTEL_RESOURCE_ATTRIBUTES":    "a=%zz",
	} {
		_, err := ReadEnv(func(name string) string {
			if name == k {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v, want an error naming it", k, v, err)
		}
	}
}
