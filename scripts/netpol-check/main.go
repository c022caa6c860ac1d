// netpol-check answers "is this connection allowed?" for a set of Kubernetes NetworkPolicies,
// with the policy engine of cyclonus (github.com/mattfenwick/cyclonus/pkg/matcher, the
// predecessor of the network-policy-api project's policy-assistant), which implements the
// NetworkPolicy semantics: a pod selected by no policy of a direction is open in it, policies
// are additive, ingress and egress must both allow.
//
// Usage: netpol-check POLICIES.json CASES.json  — POLICIES is a JSON array of
// networking.k8s.io/v1 NetworkPolicy objects; CASES a JSON array of
// {"name", "source", "destination", "port", "portName", "protocol"} where a peer is
// {"namespace", "namespaceLabels", "podLabels"} (a pod) or {"ip"} (outside the cluster).
// Prints a JSON array of {"name", "ingress", "egress", "allowed"}; exit 2 on unreadable input.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

type peer struct {
	Namespace       string            `json:"namespace"`
	NamespaceLabels map[string]string `json:"namespaceLabels"`
	PodLabels       map[string]string `json:"podLabels"`
	IP              string            `json:"ip"`
}

type query struct {
	Name        string `json:"name"`
	Source      peer   `json:"source"`
	Destination peer   `json:"destination"`
	Port        int    `json:"port"`
	PortName    string `json:"portName"`
	Protocol    string `json:"protocol"`
}

type verdict struct {
	Name    string `json:"name"`
	Ingress bool   `json:"ingress"`
	Egress  bool   `json:"egress"`
	Allowed bool   `json:"allowed"`
}

func trafficPeer(p peer) *matcher.TrafficPeer {
	if p.Namespace == "" {
		return &matcher.TrafficPeer{IP: p.IP}
	}
	labels := map[string]string{"kubernetes.io/metadata.name": p.Namespace}
	for k, v := range p.NamespaceLabels {
		labels[k] = v
	}
	return &matcher.TrafficPeer{
		IP: p.IP,
		Internal: &matcher.InternalPeer{
			Namespace:       p.Namespace,
			NamespaceLabels: labels,
			PodLabels:       p.PodLabels,
		},
	}
}

func read(path string, into any) {
	data, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(data, into)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "netpol-check: %s: %v\n", path, err)
		os.Exit(2)
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: netpol-check POLICIES.json CASES.json")
		os.Exit(2)
	}
	var policies []*networkingv1.NetworkPolicy
	var queries []query
	read(os.Args[1], &policies)
	read(os.Args[2], &queries)
	policy := matcher.BuildNetworkPolicies(false, policies)
	verdicts := make([]verdict, 0, len(queries))
	for _, q := range queries {
		result := policy.IsTrafficAllowed(&matcher.Traffic{
			Source:           trafficPeer(q.Source),
			Destination:      trafficPeer(q.Destination),
			ResolvedPort:     q.Port,
			ResolvedPortName: q.PortName,
			Protocol:         v1.Protocol(q.Protocol),
		})
		verdicts = append(verdicts, verdict{
			Name:    q.Name,
			Ingress: result.Ingress.IsAllowed(),
			Egress:  result.Egress.IsAllowed(),
			Allowed: result.IsAllowed(),
		})
	}
	out, err := json.MarshalIndent(verdicts, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "netpol-check:", err)
		os.Exit(2)
	}
	fmt.Println(string(out))
}
