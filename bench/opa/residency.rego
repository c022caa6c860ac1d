# The subset of the residency rules that both the engine and Rego express on single objects,
# for the speed comparison in compare.sh (not used by the operator). Same semantics as
# src/residency/engine.rs and src/residency/rules/ for Pods, Deployments and
# PersistentVolumeClaims under one HomeRegion policy with dataLocation, pinWorkloads and
# pinStorage on and no exemptions:
#
# - governed: the object's or its pod template's sovereign.ai/data-class, trimmed and lower-cased
#   (as the engine compares classes), is in data.residency.classes;
# - home region: the object's sovereign.ai/region label, else its pod template's, else its
#   namespace's (data.residency.namespaces);
# - dataLocation: the home region is declared and the namespace belongs to it;
# - pinWorkloads / pinStorage: only when the home region is declared (otherwise dataLocation
#   already says "label it"), as in the engine.
package sovereign.residency

topo := "topology.kubernetes.io/region"

region_label := "sovereign.ai/region"

class_label := "sovereign.ai/data-class"

labels(obj) := object.get(obj, ["metadata", "labels"], {})

template(obj) := obj if obj.kind == "Pod"

template(obj) := obj.spec.template if obj.kind == "Deployment"

# Two bodies, not a class_of function: an object and its template may carry different classes.
governed(obj) if lower(trim_space(labels(obj)[class_label])) in data.residency.classes

governed(obj) if lower(trim_space(labels(template(obj))[class_label])) in data.residency.classes

namespace_region(obj) := r if {
	r := data.residency.namespaces[obj.metadata.namespace]
} else := ""

home(obj) := r if {
	r := labels(obj)[region_label]
} else := r if {
	r := labels(template(obj))[region_label]
} else := namespace_region(obj)

id(obj) := sprintf("%s %s/%s", [obj.kind, obj.metadata.namespace, obj.metadata.name])

# A nodeSelector on the region decides on its own (the scheduler ANDs it with the affinity).
pinned(spec, locations) if spec.nodeSelector[topo] in locations

pinned(spec, locations) if {
	not spec.nodeSelector[topo]
	terms := spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms
	count(terms) > 0
	every term in terms {
		term_pins(term, locations)
	}
}

term_pins(term, locations) if {
	some e in term.matchExpressions
	e.key == topo
	e.operator == "In"
	count(e.values) > 0
	every v in e.values {
		v in locations
	}
}

violation contains sprintf("%s: dataLocation", [id(obj)]) if {
	some obj in input.items
	governed(obj)
	h := home(obj)
	not located(obj, h)
}

located(obj, h) if {
	data.residency.regions[h]
	namespace_region(obj) == h
}

violation contains sprintf("%s: pinWorkloads", [id(obj)]) if {
	some obj in input.items
	obj.kind in {"Pod", "Deployment"}
	governed(obj)
	region := data.residency.regions[home(obj)]
	not pinned(template(obj).spec, region.locations)
}

violation contains sprintf("%s: pinStorage", [id(obj)]) if {
	some obj in input.items
	obj.kind == "PersistentVolumeClaim"
	governed(obj)
	region := data.residency.regions[home(obj)]
	not stored(obj.spec, region.storageClasses)
}

# A helper rather than `not obj.spec.storageClassName in …`: OPA binds the reference before the
# negation, so a claim without storageClassName (the cluster default) would escape the rule.
stored(spec, classes) if spec.storageClassName in classes
