"""The daemon: moves files and jobs. The work on them is in caixa.pipelines."""
