// Package all is the registry of Keel's projections: the one list the
// operator's tools (keelctl projections status and rebuild) and the
// projection binaries look projections up in by name.
package all

import (
	"github.com/keel-commerce/keel/projections/analytics"
	"github.com/keel-commerce/keel/projections/cartview"
	"github.com/keel-commerce/keel/projections/checkoutstatus"
	"github.com/keel-commerce/keel/projections/orderdetail"
	"github.com/keel-commerce/keel/projections/orderhistory"
	"github.com/keel-commerce/keel/projections/readmodel"
	"github.com/keel-commerce/keel/projections/stockavailability"
)

// All returns a fresh instance of every projection, by name. A new
// projection is added here, or keelctl cannot find it.
func All() []readmodel.Projection {
	return []readmodel.Projection{
		analytics.New(),
		cartview.New(),
		checkoutstatus.New(),
		orderdetail.New(),
		orderhistory.New(),
		stockavailability.New(),
	}
}
