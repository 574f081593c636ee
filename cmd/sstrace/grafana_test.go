package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sstrace/sstrace/pkg/testutil"
)

// dashboardPath is the Grafana dashboard shipped in deploy/.
const dashboardPath = "../../deploy/grafana/sstrace.json"

// promQuery is one PromQL expression of the dashboard, with where it is.
type promQuery struct{ where, expr string }

// dashboardQueries returns every PromQL expression of the dashboard: each
// panel's targets (rows' nested panels too) and the template variables'
// label_values queries.
func dashboardQueries(t *testing.T) []promQuery {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string
		Targets []struct{ Expr string }
		Panels  []json.RawMessage
	}
	var dash struct {
		Panels     []json.RawMessage
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var qs []promQuery
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, r := range ps {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: panel: %v", dashboardPath, err)
			}
			for _, tg := range p.Targets {
				qs = append(qs, promQuery{"panel " + p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable %s: %v", dashboardPath, v.Name, err)
		}
		// label_values(METRIC, LABEL): the metric, as a selector.
		if m := regexp.MustCompile(`^label_values\((\w+),\s*\w+\)$`).FindStringSubmatch(q.Query); m != nil {
			qs = append(qs, promQuery{"variable " + v.Name, m[1]})
		} else {
			t.Errorf("variable %s: query %q is not label_values(METRIC, LABEL)", v.Name, q.Query)
		}
	}
	return qs
}

// selector is one metric an expression reads, with its label matchers.
type selector struct {
	metric   string
	matchers [][3]string // label, operator, value
}

var (
	// A metric name with an optional {matchers}; a function name is
	// followed by "(" and dropped below.
	selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?`)
	matcherRE  = regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	// What is not a metric: groupings' label lists, range and offset
	// durations, numbers, and the language's keywords.
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	rangeRE    = regexp.MustCompile(`\[[^\]]*\]`)
	keywords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true}
)

// selectors lists the metrics a PromQL expression reads. (A parser for a
// test's few dozen expressions would be a dependency of the whole module;
// the expressions here are plain, and the test fails on any name it does
// not find in the scrape, so a misreading shows.)
func selectors(expr string) []selector {
	expr = rangeRE.ReplaceAllString(groupingRE.ReplaceAllString(expr, ""), "")
	var out []selector
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		name, braces, call := m[1], m[2], m[3]
		if (call != "" && braces == "") || keywords[strings.ToLower(name)] {
			continue
		}
		s := selector{metric: name}
		for _, mm := range matcherRE.FindAllStringSubmatch(braces, -1) {
			s.matchers = append(s.matchers, [3]string{mm[1], mm[2], mm[3]})
		}
		out = append(out, s)
	}
	return out
}

// scrapeLabels reads a /metrics page into sample name -> label -> values.
func scrapeLabels(t *testing.T, url string) map[string]map[string]map[string]bool {
	t.Helper()
	samples := map[string]map[string]map[string]bool{}
	for _, line := range scrapeLines(t, url) {
		name, labels := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
			if line[i] == '{' {
				labels, _, _ = strings.Cut(line[i+1:], "}")
			}
		}
		if samples[name] == nil {
			samples[name] = map[string]map[string]bool{}
		}
		for _, mm := range matcherRE.FindAllStringSubmatch(labels, -1) {
			if samples[name][mm[1]] == nil {
				samples[name][mm[1]] = map[string]bool{}
			}
			samples[name][mm[1]][mm[3]] = true
		}
	}
	return samples
}

// scrapeLines returns the sample lines of a /metrics page (the text
// exposition format without its comments).
func scrapeLines(t *testing.T, url string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s %s", url, resp.Status, b)
	}
	var lines []string
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	return lines
}

// TestGrafanaDashboard: every metric the dashboard's queries read is in a
// real scrape of a running daemon's /metrics, with the labels they match
// on and, for an exact match, that label's value. The daemon sees one
// connection made and closed in a fresh namespace first, so that the
// transitions and outcomes the panels select have happened.
func TestGrafanaDashboard(t *testing.T) {
	queries := dashboardQueries(t)
	if len(queries) < 10 {
		t.Fatalf("only %d queries in the dashboard", len(queries))
	}
	testutil.RequireRoot(t)
	bin := sstraceBinary(t)
	free, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	startDaemon(t, bin, "--metrics-addr", addr)

	// One connection closed by both sides, one left in CLOSE-WAIT (the
	// per-namespace CLOSE-WAIT series exist only while there is one).
	ns := testutil.NewNS(t)
	var leak net.Conn
	if err := ns.Do(func() error {
		ln, err := testutil.ListenTCP4()
		if err != nil {
			return err
		}
		defer ln.Close()
		c, s, err := dialAccept(net.Dialer{}, ln)
		if err != nil {
			return err
		}
		c.Close()
		s.Close()
		c, leak, err = dialAccept(net.Dialer{}, ln)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatal(err)
	}
	defer leak.Close()

	var samples map[string]map[string]map[string]bool
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		samples = scrapeLabels(t, "http://"+addr+"/metrics")
		if samples["sstrace_transitions_total"]["new_state"]["SYN_SENT"] && samples["sstrace_connection_lifetime_seconds_count"] != nil &&
			samples["sstrace_netns_closewait_sockets"] != nil || time.Now().After(deadline) {
			break
		}
	}
	checked := 0
	for _, q := range queries {
		sels := selectors(q.expr)
		if len(sels) == 0 {
			t.Errorf("%s: no metric found in %q", q.where, q.expr)
		}
		for _, s := range sels {
			labels, ok := samples[s.metric]
			if !ok {
				t.Errorf("%s: %s is not in the daemon's /metrics (%q)", q.where, s.metric, q.expr)
				continue
			}
			checked++
			for _, m := range s.matchers {
				label, op, value := m[0], m[1], m[2]
				if label == "instance" || label == "job" { // added by Prometheus
					continue
				}
				if labels[label] == nil {
					t.Errorf("%s: %s has no label %s (%q)", q.where, s.metric, label, q.expr)
				} else if op == "=" && !labels[label][value] {
					t.Errorf("%s: %s has no series with %s=%q (%q)", q.where, s.metric, label, value, q.expr)
				}
			}
		}
	}
	t.Logf("%d queries, %d metric selectors found in a real scrape", len(queries), checked)
}
