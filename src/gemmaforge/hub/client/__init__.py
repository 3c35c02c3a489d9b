"""The hub client (library layer): talk to a gemmaforge hub, publish runs, pull and verify
adapters. See `api.HubClient`, `publish.publish`, `pull.pull`, `pull.verify_folder`."""
