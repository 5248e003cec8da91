"""The stages' command lines (pretrain, forget, attack, distribution): leaves nothing else imports."""
