"""ROS 2 glue: message conversion, the node, parameters, QoS and diagnostics."""
