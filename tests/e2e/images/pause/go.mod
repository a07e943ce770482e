module nri-bandwidth.test/pause

go 1.22
