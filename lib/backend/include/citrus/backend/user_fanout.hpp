#pragma once
/// Several backends behind one load balancer share their users: a user with a tab on backend 1 and one
/// on backend 2 sees every update on both. The backend that receives an update from the hub sends it to
/// its own sessions of the site's owner and passes it on here; the others hand it to theirs through
/// backend_service::deliver_to_user (docs/scaling.md). Nothing else crosses: the owner is decided where
/// the update arrived, from the site's row, as on one backend.
#include <string_view>

#include "citrus/core/ids.hpp"

namespace citrus {

class user_fanout {
 public:
  virtual ~user_fanout() = default;
  /// `frame` went to this backend's sessions of `user`; the other backends should send it to theirs.
  /// Called on the loop; must not block (best effort: a lost frame is recovered by a reload).
  virtual void publish(user_id user, std::string_view frame) = 0;
};

}  // namespace citrus
