// Package cart is kstate's shopping-cart example: one cart per key (the cart
// id), changed by CloudEvents and read by plain HTTP GET.
//
// Events (the key is the CloudEvents partitionkey extension by default):
//
//	com.example.cart.ItemAdded    {"sku": S, "quantity": N, "price_cents": P}
//	com.example.cart.ItemRemoved  {"sku": S, "quantity": N}
//	com.example.cart.CheckedOut   no data
//	com.example.cart.Get          no data: reads, like HTTP GET and HEAD
//
// Every event replies with the cart as JSON: its lines (in the order the SKUs
// were first added) with subtotals, the item count and the total in cents.
//
// Rules, all enforced before anything changes:
//
//   - ItemAdded needs a non-empty sku (at most MaxSKULen bytes), a quantity
//     of at least 1 and a price_cents of at least 0 (at most MaxPriceCents).
//     Adding a SKU already in the cart adds to its quantity, and the new
//     price_cents becomes the line's unit price: the latest price wins. A line
//     holds at most MaxQuantity units and a cart at most MaxLines SKUs, which
//     also keeps every total far from int64 overflow.
//   - ItemRemoved needs a sku that is in the cart and a quantity of at least
//     1 and at most what the cart holds of it: removing more than the cart
//     holds is refused, not clamped, since it means the sender's view of the
//     cart is wrong. Removing all of a SKU removes its line.
//   - CheckedOut of an empty cart is refused. Otherwise the cart is marked
//     checked out (kept, not deleted) and a com.example.cart.CartCheckedOut
//     event carrying the cart is emitted to the agent's sink (K_SINK). A
//     checked-out cart refuses every further change, and reads still work.
//
// Every refusal is a 400 with {"error": "..."} naming the field and what was
// expected, and the state is unchanged. 409 would fit "already checked out"
// and "empty" better, but Knative brokers retry 409 (and 404, 429, 5xx): a
// refusal that can never succeed must not be retried.
//
// Why a checked-out cart is kept instead of deleted: the agent deduplicates
// redelivered CloudEvents with a window it stores with the entity, and
// deleting the entity deletes that window too. A broker redelivering an
// ItemAdded after the cart was deleted would then open a new cart with that
// item. Kept, the cart refuses it. kstate has no expiry for entities yet, so
// checked-out carts stay until they are deleted outside the function.
//
// The state is stored as JSON: {"items": [...], "checked_out": true}.
package cart
