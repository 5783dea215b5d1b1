//! Build isolation (Linux namespaces, a chroot of the input closure). The sandbox takes a pure
//! `SandboxSpec` and knows nothing of goals (layer rule 5); it lands with the sandbox issue.
